"""Embedded dense multi-task scenes: determinism, agreement between tasks, partial labels, files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repro.data import embedded
from repro.data.dense_scenes import (
    IGNORE,
    PART_CLASSES,
    PART_OBJECT,
    SETTINGS,
    assign_labels,
    content_sha256,
    eligibility,
    ensure_dense,
    generate_dense,
    load_dense,
)
from repro.data.partial_labels import NYUD_TASKS, PASCAL_TASKS, load_nyud_mapping, load_pascal_mapping
from repro.errors import UserError

N_BG = len(embedded.BACKGROUND_CLASSES)


@pytest.fixture(scope="module")
def split():
    return generate_dense(300, seed=3, resolution=32)


def test_deterministic_and_built_on_the_embedded_scenes(split):
    again = generate_dense(300, seed=3, resolution=32)
    assert content_sha256(again) == content_sha256(split)
    assert content_sha256(generate_dense(300, seed=4, resolution=32)) != content_sha256(split)
    base = embedded.generate_embedded(300, seed=3, resolution=32)
    assert split.images.tobytes() == base.images.tobytes() and split.semseg.tobytes() == base.semantic.tobytes()


def test_tasks_agree_with_each_other(split):
    obj = split.semseg >= N_BG
    np.testing.assert_array_equal(split.sal, obj)
    crosses = split.labels == PART_OBJECT
    assert crosses.any() and (split.parts[~crosses] == IGNORE).all()
    cp, co = split.parts[crosses], obj[crosses]
    np.testing.assert_array_equal(cp > 0, co)                     # parts exactly cover the cross
    assert set(np.unique(cp)) == set(range(len(PART_CLASSES)))   # every part occurs
    sky = split.semseg == embedded.SKY
    np.testing.assert_array_equal(split.depth == 0, sky)          # depth everywhere but the sky
    norm = np.linalg.norm(split.normals, axis=1)
    np.testing.assert_allclose(norm[~sky], 1, atol=1e-5)
    assert (norm[sky] == 0).all()
    assert (split.normals[:, 2][~sky] < 0).all()                 # every surface faces the camera
    # edges: exactly where the right or lower neighbour has another class
    s = split.semseg
    diff = np.zeros(s.shape, bool)
    for i, j in np.ndindex(s.shape[1] - 1, s.shape[2] - 1):
        diff[:, i, j] = (s[:, i, j] != s[:, i, j + 1]) | (s[:, i, j] != s[:, i + 1, j])
    np.testing.assert_array_equal(split.edge[:, :-1, :-1], diff[:, :-1, :-1])


def test_object_in_front_of_what_it_covers(split):
    # the dome's nearest point is closer than any background pixel of its scene next to it
    obj = split.semseg >= N_BG
    for i in range(len(split)):
        bg = split.depth[i][~obj[i] & (split.depth[i] > 0)]
        if obj[i].any() and bg.size:
            assert split.depth[i][obj[i]].min() < bg.max()


def test_normals_are_the_normals_of_the_depth_map():
    # Independent check: finite differences of the depth at a fine resolution, where the
    # 3x3 neighbourhood is one surface, give the stored analytic normals.
    d = generate_dense(40, seed=1, resolution=128)
    h = 1 / 128
    zx = (d.depth[:, 1:-1, 2:] - d.depth[:, 1:-1, :-2]) / (2 * h)
    zy = (d.depth[:, 2:, 1:-1] - d.depth[:, :-2, 1:-1]) / (2 * h)
    fd = np.stack([zx, zy, -np.ones_like(zx)], axis=1)
    fd /= np.linalg.norm(fd, axis=1, keepdims=True)
    s = d.semseg
    same = np.ones(zx.shape, bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            same &= s[:, 1 + di:127 + di, 1 + dj:127 + dj] == s[:, 1:-1, 1:-1]
    same &= s[:, 1:-1, 1:-1] != embedded.SKY
    smooth = same & (d.depth[:, 1:-1, 1:-1] < 10)  # away from the far cut-off of the ground
    cos = (fd * d.normals[:, :, 1:-1, 1:-1]).sum(1)[smooth]
    assert smooth.sum() > 100_000
    assert np.median(np.degrees(np.arccos(np.clip(cos, -1, 1)))) < 0.5
    assert np.mean(np.degrees(np.arccos(np.clip(cos, -1, 1))) < 5) > 0.97


def test_partial_label_settings(split):
    el = eligibility(split, PASCAL_TASKS)
    one = assign_labels("one_label", el, np.random.default_rng(0))
    assert (one.sum(1) == 1).all() and not (one & ~el).any()
    counts = one.sum(0)
    # the cross scenes carry parts (the rarest label); the rest share the other four tasks evenly
    assert counts[1] == (split.labels == PART_OBJECT).sum()
    assert counts[[0, 2, 3, 4]].max() - counts[[0, 2, 3, 4]].min() <= 1
    rand = assign_labels("random_labels", el, np.random.default_rng(0))
    assert rand.sum(1).min() >= 1 and rand.sum(1).max() <= len(PASCAL_TASKS) - 1 and not (rand & ~el).any()
    assert len(np.unique(rand, axis=0)) > 10
    nyud = assign_labels("one_label", eligibility(split, NYUD_TASKS), np.random.default_rng(0))
    assert sorted(nyud.sum(0)) == [100, 100, 100]
    with pytest.raises(UserError, match="one_label, random_labels"):
        assign_labels("all", el, np.random.default_rng(0))


def test_ensure_writes_splits_and_authors_format_mappings(tmp_path):
    paths = ensure_dense(tmp_path / "a", n_train=60, n_test=20, seed=5, resolution=16)
    assert set(paths) == {"train", "test"} | {f"{f}/{s}" for f in ("pascal", "nyud") for s in SETTINGS}
    train = load_dense(paths["train"])
    assert len(train) == 60 and len(load_dense(paths["test"])) == 20
    one = load_pascal_mapping(paths["pascal/one_label"])
    assert list(one) == train.ids and all(v.sum() == 1 for v in one.values())
    rand = load_nyud_mapping(paths["nyud/random_labels"], n_samples=60)
    assert rand.shape == (60, 3) and set(rand.sum(1)) <= {1, 2}
    # byte-identical regeneration elsewhere: arrays and mapping files
    other = ensure_dense(tmp_path / "b", n_train=60, n_test=20, seed=5, resolution=16)
    assert content_sha256(load_dense(other["train"])) == content_sha256(train)
    for key in paths:
        if key.endswith("label") or key.endswith("labels"):
            assert paths[key].read_bytes() == other[key].read_bytes()
    # reuse when verified, regenerate when the sidecar disagrees
    stamp = paths["train"].stat().st_mtime_ns
    ensure_dense(tmp_path / "a", n_train=60, n_test=20, seed=5, resolution=16)
    assert paths["train"].stat().st_mtime_ns == stamp
    sidecar = paths["train"].with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(meta | {"sha256": "0" * 64}))
    ensure_dense(tmp_path / "a", n_train=60, n_test=20, seed=5, resolution=16)
    assert paths["train"].stat().st_mtime_ns != stamp


def test_missing_split_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_dense(tmp_path / "nope.npz")


def test_torch_view_batches_targets_and_flags(split):
    from torch.utils.data import DataLoader

    from repro.data.dense_scenes import DenseScenesDataset

    flags = assign_labels("random_labels", eligibility(split, PASCAL_TASKS), np.random.default_rng(1))
    batch = next(iter(DataLoader(DenseScenesDataset(split, PASCAL_TASKS, flags), batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].min() >= -1
    assert batch["normals"].shape == (4, 3, 32, 32) and batch["normals"].dtype == torch.float32
    assert batch["semseg"].dtype == torch.int64 and batch["human_parts"].max() <= IGNORE
    np.testing.assert_array_equal(batch["labelled"].numpy(), flags[:4])
    np.testing.assert_array_equal(batch["sal"].numpy(), split.sal[:4])
    depth = DenseScenesDataset(split, ("semseg", "depth", "normals"))[0]
    assert depth["labelled"].all() and depth["depth"].dtype.is_floating_point
    with pytest.raises(UserError, match="unknown dense tasks"):
        DenseScenesDataset(split, ("semseg", "albedo"))
    with pytest.raises(UserError, match="expected"):
        DenseScenesDataset(split, PASCAL_TASKS, flags[:10])


def test_verify_checks_splits_and_mappings_against_the_generator(tmp_path):
    """`python -m repro.data --verify` (the DVC data stage) for the dense scenes: files that the
    generator makes pass; a split or a mapping file that differs is named."""
    from repro.data.dense_scenes import verify_dense
    from repro.data.partial_labels import save_nyud_mapping

    paths = verify_dense(tmp_path, 12, 4, 7, 32)
    assert set(paths) == {"train", "test", "pascal/one_label", "pascal/random_labels", "nyud/one_label",
                          "nyud/random_labels"}
    flags = load_nyud_mapping(paths["nyud/one_label"])
    save_nyud_mapping(paths["nyud/one_label"], ~flags)
    with pytest.raises(UserError, match="nyud.onelabel.pth differs"):
        verify_dense(tmp_path, 12, 4, 7, 32)
    save_nyud_mapping(paths["nyud/one_label"], flags)
    sidecar = paths["test"].with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    other = generate_dense(4, 8, 32, stream=1)          # another seed's scenes under this one's name
    np.savez_compressed(paths["test"], **{f: getattr(other, f) for f in ("images", "labels", "semseg", "parts", "sal",
                                                                           "depth", "normals", "edge")})
    sidecar.write_text(json.dumps({**meta, "sha256": content_sha256(other)}))   # a sidecar that vouches for it
    with pytest.raises(UserError, match="dense-test-n4-seed7-res32-v1.npz differs"):
        verify_dense(tmp_path, 12, 4, 7, 32)
