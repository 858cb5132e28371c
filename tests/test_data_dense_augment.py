"""DiffusionMTL's training augmentation (repro/data/dense_augment.py) on items built here whose
fields all encode the same pixel id, so that any misalignment between the image and a label
map, or between two label maps, shows as a mismatch of ids."""
from __future__ import annotations

import math

import pytest
import torch

from repro.data.dense_augment import (ATRC_CROP_TRIES, IGNORE, _hsv_step, atrc, augmentation, hflip, ignore_empty_parts,
                                      mtpsl, pad, photometric, random_crop, scale)

H, W = 10, 14


def coded_item(h: int = H, w: int = W) -> dict[str, torch.Tensor]:
    """Pixel id p = r * w + c (< 255) in every field: the image's red channel on the 8-bit grid,
    semseg = p, human_parts = p % 7, edge = p % 2, depth = p + 1, normals = (0.5, p / 1000, 1)."""
    p = torch.arange(h * w).reshape(h, w)
    assert p.max() < IGNORE
    image = torch.stack([p.float() / 127.5 - 1, torch.zeros(h, w), torch.full((h, w), 0.5)])
    normals = torch.stack([torch.full((h, w), 0.5), p.float() / 1000, torch.ones(h, w)])
    return {"image": image, "labelled": torch.tensor([True, False, True, True, False]), "semseg": p.clone(),
            "human_parts": p % 7, "edge": p % 2, "depth": (p + 1).float(), "normals": normals}


def red_ids(item) -> torch.Tensor:
    return ((item["image"][0] + 1) * 127.5).round().long()


def test_flip_mirrors_every_field_and_negates_the_normals_x():
    item = coded_item()
    out = hflip(item)
    for key in ("image", "semseg", "human_parts", "edge", "depth"):
        assert torch.equal(out[key], torch.flip(item[key], dims=[-1])), key
    assert torch.equal(out["normals"][0], -torch.flip(item["normals"][0], dims=[-1]))      # x negated
    assert torch.equal(out["normals"][1:], torch.flip(item["normals"][1:], dims=[-1]))     # y, z kept
    assert torch.equal(out["labelled"], item["labelled"])
    assert out["semseg"][0, 0] == W - 1 and out["semseg"][0, -1] == 0                       # hand-computed corner ids
    twice = hflip(out)
    assert all(torch.equal(twice[k], item[k]) for k in item)


def test_crop_keeps_every_field_on_the_same_window():
    item = coded_item()
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        out = random_crop(item, (4, 6), g, cat_max_ratio=1.0)
        top, left = divmod(int(out["semseg"][0, 0]), W)
        expect = torch.arange(H * W).reshape(H, W)[top:top + 4, left:left + 6]
        assert torch.equal(out["semseg"], expect) and torch.equal(red_ids(out), expect)
        assert torch.equal(out["human_parts"], expect % 7) and torch.equal(out["depth"], (expect + 1).float())
        assert torch.equal(out["normals"][1], expect.float() / 1000)


def test_crop_larger_than_the_item_keeps_it_whole_and_pad_fills_the_ignore_values():
    item = coded_item(3, 5)
    out = pad(random_crop(item, (6, 8), torch.Generator().manual_seed(0), cat_max_ratio=1.0), (6, 8))
    top, left = (6 - 3) // 2, (8 - 5) // 2                     # centred, as the authors' PadImage
    inside = (slice(top, top + 3), slice(left, left + 5))
    assert torch.equal(out["semseg"][inside], item["semseg"])
    border = torch.ones(6, 8, dtype=torch.bool)
    border[inside] = False
    for key in ("semseg", "human_parts", "edge"):
        assert (out[key][border] == IGNORE).all(), key
    assert (out["image"][:, border] == 0).all() and (out["normals"][:, border] == 0).all()
    assert (out["depth"][border] == 0).all()
    with pytest.raises(ValueError, match="larger than the padded size"):
        pad(item, (2, 8))


def test_scale_by_two_repeats_labels_and_halves_depth():
    """Nearest-neighbour doubling (hand-computed): each label becomes a 2 x 2 block; depth / 2."""
    item = coded_item()
    out = scale(item, 2.0)
    assert out["semseg"].shape == (2 * H, 2 * W) and out["image"].shape == (3, 2 * H, 2 * W)
    for dr in (0, 1):
        for dc in (0, 1):
            assert torch.equal(out["semseg"][dr::2, dc::2], item["semseg"])
            assert torch.equal(out["depth"][dr::2, dc::2], item["depth"] / 2)
            assert torch.equal(out["normals"][:, dr::2, dc::2], item["normals"])
    half = scale(item, 0.5)
    assert half["semseg"].shape == (H // 2, W // 2) and torch.equal(half["semseg"], item["semseg"][::2, ::2])


def test_crop_redraws_while_one_class_dominates_at_the_hand_computed_rate():
    """Class 1 in columns 0-31, class 2 in 32-39, 8 x 8 crops: the window is accepted (largest
    class < 75% of it) only at left offsets 27, 28, 29 of 33. A first draw plus up to 10
    re-draws succeeds with probability 1 - (30/33)^11; without re-draws 3/33."""
    semseg = torch.ones(8, 40, dtype=torch.long)
    semseg[:, 32:] = 2
    item = {"image": torch.zeros(3, 8, 40), "semseg": semseg}

    def accepted(cat_max_ratio: float, seeds: range) -> float:
        ok = 0
        for seed in seeds:
            out = random_crop(item, (8, 8), torch.Generator().manual_seed(seed), cat_max_ratio=cat_max_ratio)
            counts = torch.bincount(out["semseg"].flatten())
            ok += int((counts > 0).sum() > 1 and counts.max() / 64 < 0.75)
        return ok / len(seeds)

    n = 600
    p = 1 - (30 / 33) ** (ATRC_CROP_TRIES + 1)
    assert accepted(0.75, range(n)) == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n))
    assert accepted(1.0, range(n)) == pytest.approx(3 / 33, abs=4 * math.sqrt(3 / 33 * 30 / 33 / n))


def test_atrc_recipe_keeps_the_fields_aligned_and_ignores_the_padding():
    """The whole PASCAL recipe (scale, crop, flip, photometric, pad) on the coded item: wherever
    semseg is labelled the other maps hold the same pixel id (depth scaled by one factor, normals'
    x with one sign, the flip's); wherever it is padding, every field holds its ignore value."""
    item = coded_item()
    size = (16, 16)
    flips = 0
    for seed in range(12):
        out = atrc(item, torch.Generator().manual_seed(seed), size)
        assert out["image"].shape == (3, *size) and out["semseg"].shape == size
        p = out["semseg"]
        valid = p != IGNORE
        assert valid.any()
        assert torch.equal(out["human_parts"][valid], p[valid] % 7) and torch.equal(out["edge"][valid], p[valid] % 2)
        ratio = (p[valid] + 1).double() / out["depth"][valid].double()
        assert torch.allclose(ratio, ratio[0].expand_as(ratio))               # depth / s, one s per item
        assert torch.allclose(out["normals"][1][valid], p[valid].float() / 1000)
        x = out["normals"][0][valid]
        flipped = bool((x < 0).all())
        assert flipped or bool((x > 0).all())
        # ids along a row fall after a flip, rise otherwise (repeated where scaled up)
        row = p[valid.any(1).nonzero()[0, 0]]
        d = row[row != IGNORE].diff()
        if (d != 0).any():
            assert bool((d <= 0).all() if flipped else (d >= 0).all())
        flips += flipped
        for key in ("semseg", "human_parts", "edge"):
            assert (out[key][~valid] == IGNORE).all()
        assert (out["normals"][:, ~valid] == 0).all() and (out["depth"][~valid] == 0).all()
        assert (out["image"][:, ~valid] == 0).all()
        grid = (out["image"][:, valid] + 1) * 127.5                              # photometric: 8-bit values
        assert torch.allclose(grid, grid.round(), atol=1e-4) and out["image"].abs().max() <= 1
    assert 0 < flips < 12


def test_parts_of_a_crop_without_any_part_are_all_ignore():
    item = {"image": torch.zeros(3, 2, 2), "human_parts": torch.tensor([[0, IGNORE], [0, 0]])}
    assert (ignore_empty_parts(item)["human_parts"] == IGNORE).all()
    item["human_parts"][0, 0] = 3
    assert torch.equal(ignore_empty_parts(item)["human_parts"], item["human_parts"])


def test_hsv_steps_on_known_colours():
    """A hue shift of 60 OpenCV units (120 degrees) turns red into green; saturation x 0 is grey."""
    red = torch.tensor([255.0, 0.0, 0.0])[:, None, None].expand(3, 2, 2).clone()
    green = _hsv_step(red, 0, lambda h: torch.remainder(h + 60, 180))
    assert green[:, 0, 0].tolist() == [0.0, 255.0, 0.0]
    grey = _hsv_step(torch.tensor([200.0, 100.0, 50.0])[:, None, None], 1, lambda s: s * 0)
    assert grey[:, 0, 0].tolist() == [200.0, 200.0, 200.0]     # V = max channel, S = 0


def test_photometric_leaves_one_image_in_sixteen_untouched():
    """Brightness, contrast, saturation and hue are each applied with p = 1/2: an image passes
    unchanged with probability 1/16 (a change that rounds away is rare on this image)."""
    image = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(0))
    image = torch.round((image + 0) * 255) / 127.5 - 1          # on the 8-bit grid already
    n = 800
    same = sum(torch.allclose(photometric(image, torch.Generator().manual_seed(s)), image, rtol=0, atol=1e-6)
               for s in range(n)) / n
    assert same == pytest.approx(1 / 16, abs=4 * math.sqrt(1 / 16 * 15 / 16 / n))


def test_mtpsl_scale_crop_keeps_the_size_divides_depth_and_keeps_labels_aligned():
    item = coded_item()
    seen = set()
    for seed in range(30):
        out = mtpsl(item, torch.Generator().manual_seed(seed))
        assert out["image"].shape == (3, H, W) and out["semseg"].shape == (H, W)
        s = float(((out["semseg"] + 1).double() / out["depth"].double()).mean())
        assert s in (pytest.approx(1.0), pytest.approx(1.2), pytest.approx(1.5))
        seen.add(round(s, 1))
        assert torch.allclose((out["semseg"] + 1).double() / s, out["depth"].double())
        assert torch.equal(out["human_parts"], out["semseg"] % 7)
        if round(s, 1) == 1.0:
            assert all(torch.equal(out[k], item[k]) for k in item)   # the whole image, resized to itself
    assert seen == {1.0, 1.2, 1.5}


def test_named_recipes():
    assert augmentation("none", (8, 8)) is None
    assert augmentation("atrc", (8, 8))(coded_item(), torch.Generator().manual_seed(0))["semseg"].shape == (8, 8)
    with pytest.raises(ValueError, match="choose one of none, atrc, mtpsl"):
        augmentation("flip", (8, 8))


def test_train_augment_is_a_checked_option_off_except_at_the_paper_profile(tmp_path, monkeypatch):
    from repro.config import compose
    from repro.errors import UserError
    from repro.table_checks import validate_dense

    monkeypatch.chdir(tmp_path)   # validate_dense makes the tiny dense scenes under the working directory
    assert "augment" not in compose("diffusionmtl", "smoke").train     # smoke and tiny: keys as before
    assert "augment" not in compose("diffusionmtl", "tiny").train
    assert compose("diffusionmtl", "paper").train.augment == "atrc"
    assert compose("diffusionmtl_nyud", "paper").train.augment == "mtpsl"
    assert compose("diffusionmtl", "tiny", overrides=["+train.augment=atrc"]).train.augment == "atrc"
    validate_dense(compose("diffusionmtl", "tiny", overrides=["+train.augment=mtpsl"]))
    from repro.table_checks import validate
    with pytest.raises(UserError, match="train.augment is DiffusionMTL's training augmentation"):
        validate(compose("1", "tiny", overrides=["+train.augment=atrc"]))   # not silently ignored
    with pytest.raises(UserError, match="train.augment takes one of none, atrc, mtpsl"):
        validate_dense(compose("diffusionmtl", "tiny", overrides=["+train.augment=jitter"]))


def test_training_step_augments_the_batch_from_the_steps_generator(tmp_path, monkeypatch):
    """A dense_train step with augmentation: the same (seed, step) gives the same loss (resuming
    is exact), and the batch differs from the unaugmented one."""
    from repro.config import compose, to_dict
    from repro.jobs.dense_train import dense_step
    from repro.jobs.trained import build_dense

    monkeypatch.chdir(tmp_path)   # the tiny dense scenes are written under the working directory
    cfg = to_dict(compose("diffusionmtl", "tiny"))
    cfg["model"], cfg["data"]["setting"] = cfg["models"]["mtl_baseline"], "random_labels"
    torch.manual_seed(0)
    task, model = build_dense(cfg)
    data = task.training_data(cfg)
    res = cfg["data"]["resolution"]
    batches = []

    def loss(augment, seed):
        def recording(model_, batch, g):
            batches.append(batch)
            return task.loss(model_, batch, g)
        step = dense_step(model, type("T", (), {"loss": staticmethod(recording)})(), data, 4, augment)
        return step(torch.Generator().manual_seed(seed), lambda x: x)[0]

    atrc_ = augmentation("atrc", (res, res))
    first, again = loss(atrc_, 5), loss(atrc_, 5)
    assert torch.isfinite(first) and torch.equal(first, again)
    plain = loss(None, 5)
    assert batches[0]["image"].shape == batches[2]["image"].shape
    assert torch.equal(batches[0]["semseg"], batches[1]["semseg"])
    assert not torch.equal(batches[0]["image"], batches[2]["image"])
    assert torch.isfinite(plain)
