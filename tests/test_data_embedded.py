"""The embedded dataset: determinism, contents, day/night pairing, caching, torch view, palettes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repro.data import (
    CITYSCAPES_PALETTE,
    NUM_CLASSES,
    NUM_SEMANTIC_CLASSES,
    SEMANTIC_CLASSES,
    SEMANTIC_PALETTE,
    EmbeddedDataset,
    colorize,
    content_sha256,
    ensure_embedded,
    generate_embedded,
    load_split,
    nearest_palette_ids,
    save_split,
    to_model_space,
    to_uint8,
)
from repro.data import embedded
from repro.errors import UserError

N_BG = 3  # sky, ground, wall precede the object classes in the semantic ids


@pytest.fixture(scope="module")
def split32():
    return generate_embedded(400, seed=11, resolution=32)


def _fields(split):
    return (split.images, split.night, split.labels, split.semantic)


def test_same_seed_same_bytes_other_seed_or_stream_differs():
    a, b = generate_embedded(60, seed=5), generate_embedded(60, seed=5)
    for x, y in zip(_fields(a), _fields(b)):
        assert x.tobytes() == y.tobytes()
    for other in (generate_embedded(60, seed=6), generate_embedded(60, seed=5, stream=1)):
        assert other.images.tobytes() != a.images.tobytes()
        assert other.semantic.tobytes() != a.semantic.tobytes()


@pytest.mark.parametrize("res", [16, 32])
def test_shapes_dtypes_ranges(res):
    s = generate_embedded(30, seed=0, resolution=res)
    assert s.images.shape == s.night.shape == (30, res, res, 3)
    assert s.images.dtype == s.night.dtype == np.uint8
    assert s.labels.shape == (30,) and s.labels.dtype == np.int64
    assert s.semantic.shape == (30, res, res) and s.semantic.dtype == np.uint8
    assert s.labels.min() >= 0 and s.labels.max() < NUM_CLASSES
    assert s.semantic.max() < NUM_SEMANTIC_CLASSES == len(SEMANTIC_CLASSES) == len(SEMANTIC_PALETTE)
    # not degenerate: images use a good part of the byte range
    assert s.images.min() < 40 and s.images.max() > 215
    assert len(s) == 30 and s.resolution == res


def test_empty_and_invalid_sizes():
    assert generate_embedded(0, seed=0).images.shape == (0, 32, 32, 3)
    with pytest.raises(UserError):
        generate_embedded(-1, seed=0)
    with pytest.raises(UserError):
        generate_embedded(4, seed=0, resolution=4)
    with pytest.raises(UserError):
        generate_embedded(4, seed=-3)


def test_all_classes_present_and_balanced(split32):
    counts = np.bincount(split32.labels, minlength=NUM_CLASSES)
    assert counts.min() == counts.max() == 400 // NUM_CLASSES
    assert set(generate_embedded(NUM_CLASSES, seed=3).labels.tolist()) == set(range(NUM_CLASSES))
    # every background class occurs too
    assert set(np.unique(split32.semantic)) == set(range(NUM_SEMANTIC_CLASSES))


def test_semantic_map_carries_the_object_class(split32):
    for label, sem in zip(split32.labels, split32.semantic):
        object_ids = set(np.unique(sem[sem >= N_BG]).tolist())
        assert object_ids == {N_BG + int(label)}
        area = (sem == N_BG + label).mean()
        assert 0.01 < area < 0.5, "object should be visible but not fill the frame"
        assert set(np.unique(sem[sem < N_BG]).tolist()) <= {0, 1, 2}


def test_object_stands_out_from_background(split32):
    """The colour of the object's pixels differs from the background it sits on, in the photo."""
    contrast = []
    for img, sem in zip(split32.images.astype(np.float64), split32.semantic):
        obj = sem >= N_BG
        contrast.append(np.linalg.norm(img[obj].mean(0) - img[~obj].mean(0)))
    assert np.quantile(contrast, 0.05) > 20


def test_class_is_learnable_from_pixels():
    """A linear classifier on the 16x16 day photos beats chance (0.1) by far: shape+colour carry the label."""
    train, test = generate_embedded(2000, seed=1, resolution=16), generate_embedded(500, seed=2, resolution=16)
    xtr = to_model_space(train.images).flatten(1)
    xte = to_model_space(test.images).flatten(1)
    ytr = torch.from_numpy(train.labels)
    torch.manual_seed(0)
    model = torch.nn.Linear(xtr.shape[1], NUM_CLASSES)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: extra threads only contend on a busy 2-core machine
    try:
        for _ in range(50):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xtr), ytr).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    acc = (model(xte).argmax(1).numpy() == test.labels).mean()
    assert acc > 0.3


def test_night_shares_geometry_but_is_darker_bluer_flatter(split32):
    day = split32.images.astype(np.float64)
    night = split32.night.astype(np.float64)
    assert (night.mean(axis=(1, 2, 3)) < day.mean(axis=(1, 2, 3))).all()
    blue_share = lambda x: x[..., 2].sum(axis=(1, 2)) / (x.sum(axis=(1, 2, 3)) + 1e-9)  # noqa: E731
    assert np.median(blue_share(night) - blue_share(day)) > 0.05
    assert np.median(night.std(axis=(1, 2, 3)) / day.std(axis=(1, 2, 3))) < 0.6
    # same geometry: the object/background split seen in the day photo is seen at night too
    same_sign = []
    for d, n, sem in zip(day.mean(-1), night.mean(-1), split32.semantic):
        obj = sem >= N_BG
        same_sign.append(np.sign(d[obj].mean() - d[~obj].mean()) == np.sign(n[obj].mean() - n[~obj].mean()))
    assert np.mean(same_sign) > 0.8


def test_scenes_do_not_depend_on_resolution():
    lo, hi = generate_embedded(50, seed=4, resolution=16), generate_embedded(50, seed=4, resolution=32)
    np.testing.assert_array_equal(lo.labels, hi.labels)
    # the 16x16 pixel centre (2i+1)/32 lies between 32x32 pixels 2i and 2i+1: compare to the first
    agree = (lo.semantic == hi.semantic[:, ::2, ::2]).mean()
    assert agree > 0.85


def test_save_load_roundtrip(tmp_path, split32):
    path = save_split(split32, tmp_path / "s.npz")
    back = load_split(path)
    for x, y in zip(_fields(split32), _fields(back)):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert content_sha256(back) == content_sha256(split32)
    with pytest.raises(UserError, match="not found"):
        load_split(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="bad.npz"):
        load_split(tmp_path / "bad.npz")


def test_ensure_embedded_generates_reuses_and_repairs(tmp_path, monkeypatch):
    paths = ensure_embedded(tmp_path, n_train=40, n_test=20, seed=9, resolution=16)
    assert set(paths) == {"train", "test"}
    for name, n in (("train", 40), ("test", 20)):
        assert f"n{n}" in paths[name].name and "seed9" in paths[name].name and "res16" in paths[name].name
        meta = json.loads(paths[name].with_suffix(".json").read_text())
        assert meta["n"] == n and meta["seed"] == 9 and meta["resolution"] == 16
        assert meta["sha256"] == content_sha256(load_split(paths[name]))
    train, test = load_split(paths["train"]), load_split(paths["test"])
    assert len(train) == 40 and len(test) == 20
    assert train.images[:20].tobytes() != test.images.tobytes(), "test split must not repeat train"

    calls = []
    real = embedded.generate_embedded
    monkeypatch.setattr(embedded, "generate_embedded", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert ensure_embedded(tmp_path, 40, 20, 9, 16) == paths
    assert calls == [], "verified files must be reused"

    # a tampered split (valid file, wrong content) is detected by its hash and regenerated
    tampered = load_split(paths["train"])
    tampered.images[0, 0, 0, 0] ^= 1
    save_split(tampered, paths["train"])
    ensure_embedded(tmp_path, 40, 20, 9, 16)
    assert len(calls) == 1
    assert load_split(paths["train"]).images.tobytes() == train.images.tobytes()
    # a missing sidecar means "never finished writing": regenerate
    paths["test"].with_suffix(".json").unlink()
    ensure_embedded(tmp_path, 40, 20, 9, 16)
    assert len(calls) == 2


def test_torch_view(split32):
    ds = EmbeddedDataset(split32)
    img, label = ds[3]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert -1.0 <= img.min() and img.max() <= 1.0
    assert label == int(split32.labels[3])
    np.testing.assert_array_equal(to_uint8(img), split32.images[3])  # exact inverse of x / 127.5 - 1
    night, day, sem = EmbeddedDataset(split32, fields=("night", "image", "semantic"))[3]
    assert torch.equal(day, img) and night.shape == day.shape and not torch.equal(night, day)
    assert sem.dtype == torch.int64 and torch.equal(sem, torch.from_numpy(split32.semantic[3]).long())
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch[0].shape == (8, 3, 32, 32) and batch[1].shape == (8,)
    with pytest.raises(UserError, match="fields"):
        EmbeddedDataset(split32, fields=("photo",))


@pytest.mark.parametrize("palette", [SEMANTIC_PALETTE, CITYSCAPES_PALETTE])
def test_palette_colours_decode_back_to_ids(palette):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(palette), size=(4, 9, 9))
    rgb = colorize(ids, palette)
    assert rgb.shape == (4, 9, 9, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(nearest_palette_ids(rgb, palette), ids)
    # perturbations below half the closest pair's distance (a generated label image is never
    # exact) still decode correctly; Cityscapes' bus and train are only 20 apart
    d = np.linalg.norm(palette[:, None].astype(float) - palette[None].astype(float), axis=-1)
    closest = d[~np.eye(len(palette), dtype=bool)].min()
    amp = int(closest / 2 / np.sqrt(3)) - 1
    noisy = np.clip(rgb.astype(int) + rng.integers(-amp, amp + 1, size=rgb.shape), 0, 255)
    np.testing.assert_array_equal(nearest_palette_ids(noisy, palette), ids)


def test_embedded_palette_is_unambiguous():
    d = np.linalg.norm(SEMANTIC_PALETTE[:, None].astype(float) - SEMANTIC_PALETTE[None].astype(float), axis=-1)
    assert d[~np.eye(len(SEMANTIC_PALETTE), dtype=bool)].min() > 60
