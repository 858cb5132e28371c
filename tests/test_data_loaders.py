"""Loaders for user-held data (ImageNet, Cityscapes, night2day) on small trees built in tmp_path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from repro.data import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    Cityscapes,
    ImageNetFolder,
    Night2Day,
    center_crop_arr,
    label_ids_to_train_ids,
    split_ab,
    to_model_space,
)
from repro.errors import UserError


def _save(path, array, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path, format=fmt)
    return path


def _noise(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# ImageNet


def test_center_crop_keeps_the_centre_exactly():
    # 256x128 (W x H): red | green green | blue quarters. Short side 128 >= 2*64: one box halving
    # to 128x64 (quarter borders at even columns, so blocks stay pure), no resize needed, and the
    # central 64 columns (32..95) are exactly the green half.
    img = np.zeros((128, 256, 3), np.uint8)
    img[:, :64] = (255, 0, 0)
    img[:, 64:192] = (0, 255, 0)
    img[:, 192:] = (0, 0, 255)
    out = center_crop_arr(Image.fromarray(img), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out == np.array([0, 255, 0], np.uint8)).all()
    # portrait: the crop is vertical
    out = center_crop_arr(Image.fromarray(np.ascontiguousarray(img.transpose(1, 0, 2))), 64)
    assert (out == np.array([0, 255, 0], np.uint8)).all()


def test_center_crop_halves_repeatedly_with_a_box_filter():
    # 8x8-pixel checkerboard cells, 1024x512: three box halvings (512 -> 256 -> 128 -> 64 short
    # side) turn every cell into exactly one pixel; a single bicubic resize would blur them.
    yy, xx = np.mgrid[:512, :1024]
    board = (((yy // 8) + (xx // 8)) % 2 * 255).astype(np.uint8)
    out = center_crop_arr(Image.fromarray(board).convert("RGB"), 64)
    i, j = np.mgrid[:64, :64]
    left = (128 - 64) // 2
    expected = ((i + j + left) % 2 * 255).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)


def test_center_crop_upscales_small_images_to_the_short_side():
    rng = np.random.default_rng(0)
    out = center_crop_arr(Image.fromarray(_noise(rng, 20, 50)), 64)  # H=20 -> 64, W=50 -> 160
    assert out.shape == (64, 64, 3)
    # horizontal gradient: after resize+crop the columns stay ordered and centred
    grad = np.tile(np.linspace(0, 255, 300).astype(np.uint8)[None, :, None], (100, 1, 3))
    out = center_crop_arr(Image.fromarray(grad), 64)
    assert (np.diff(out[32, :, 0].astype(int)) >= 0).all()
    assert abs(out[:, 31:33, 0].mean() - 127.5) < 3


def _imagenet_tree(root):
    rng = np.random.default_rng(1)
    _save(root / "n002" / "b.png", _noise(rng, 40, 60))
    _save(root / "n001" / "a.png", _noise(rng, 70, 50))
    _save(root / "n001" / "c.JPEG", _noise(rng, 64, 64), fmt="JPEG")
    _save(root / "n001" / "sub" / "d.png", _noise(rng, 30, 30))
    (root / "n001" / "notes.txt").write_text("not an image")
    _save(root / ".cache" / "x.png", _noise(rng, 8, 8))  # hidden folders are not classes
    return root


def test_imagenet_class_folders(tmp_path):
    ds = ImageNetFolder(_imagenet_tree(tmp_path / "train"), resolution=64)
    assert ds.classes == ["n001", "n002"] and ds.num_classes == 2
    assert len(ds) == 4
    assert sorted((p.name, y) for p, y in ds.samples) == [("a.png", 0), ("b.png", 1), ("c.JPEG", 0), ("d.png", 0)]
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        assert -1 <= x.min() and x.max() <= 1 and y in (0, 1)
    # the pixels are ADM's crop of the file, mapped by b / 127.5 - 1
    path, _ = ds.samples[0]
    expected = to_model_space(center_crop_arr(Image.open(path), 64))
    assert torch.equal(ds[0][0], expected)
    assert ImageNetFolder(tmp_path / "train", resolution=32)[0][0].shape == (3, 32, 32)


def test_imagenet_random_flip(tmp_path):
    ds = ImageNetFolder(_imagenet_tree(tmp_path / "train"), resolution=32, random_flip=True)
    plain = ImageNetFolder(tmp_path / "train", resolution=32)[0][0]
    torch.manual_seed(0)
    seen = {torch.equal(ds[0][0], plain) for _ in range(20)}
    assert seen == {True, False}
    for _ in range(5):
        x = ds[0][0]
        assert torch.equal(x, plain) or torch.equal(x, plain.flip(-1))


def test_imagenet_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match=str(missing)) as e:
        ImageNetFolder(missing)
    assert "data.root" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class folders"):
        ImageNetFolder(tmp_path / "empty")
    (tmp_path / "hollow" / "n001").mkdir(parents=True)
    with pytest.raises(UserError, match="n001"):
        ImageNetFolder(tmp_path / "hollow")
    bad = tmp_path / "bad"
    (bad / "n001").mkdir(parents=True)
    (bad / "n001" / "broken.JPEG").write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = ImageNetFolder(bad)
    with pytest.raises(UserError, match="broken.JPEG"):
        ds[0]


# ---------------------------------------------------------------------------------------------
# Cityscapes

# labelId -> trainId, written out from the Cityscapes label definitions (independent of the module)
OFFICIAL = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
            25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def test_label_id_table():
    ids = np.arange(256, dtype=np.uint8)
    expected = np.array([OFFICIAL.get(i, 255) for i in range(256)], dtype=np.uint8)
    np.testing.assert_array_equal(label_ids_to_train_ids(ids), expected)
    assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_PALETTE.shape == (19, 3)
    assert CITYSCAPES_CLASSES[0] == "road" and tuple(CITYSCAPES_PALETTE[0]) == (128, 64, 128)
    assert CITYSCAPES_CLASSES[10] == "sky" and tuple(CITYSCAPES_PALETTE[10]) == (70, 130, 180)


def _cityscapes_tree(root, split="val"):
    rng = np.random.default_rng(2)
    # one column band per label id, including ignored ones (0 unlabeled, 4 static, 34+, 255)
    band_ids = [0, 4, 7, 8, 11, 23, 24, 26, 33, 34, 255, 6, 31, 21, 17, 12]
    label = np.repeat(np.array(band_ids, np.uint8)[None, :], 4, axis=1).repeat(32, axis=0)  # 32 x 64
    for city, frame in (("aachen", "000000_000019"), ("bremen", "000001_000042")):
        _save(root / "leftImg8bit" / split / city / f"{city}_{frame}_leftImg8bit.png", _noise(rng, 32, 64))
        Image.fromarray(label, mode="L").save(
            _save(root / "gtFine" / split / city / f"{city}_{frame}_gtFine_labelIds.png", label)
        )
    return root, label


def test_cityscapes_pairs_and_train_ids(tmp_path):
    root, label = _cityscapes_tree(tmp_path / "cityscapes")
    ds = Cityscapes(root, split="val", size=(32, 64))
    assert len(ds) == 2 and ds.samples[0][0].parent.name == "aachen"
    photo, train_ids = ds[0]
    assert photo.shape == (3, 32, 64) and photo.dtype == torch.float32
    assert train_ids.shape == (32, 64) and train_ids.dtype == torch.int64
    expected = np.vectorize(lambda i: OFFICIAL.get(int(i), 255))(label)
    np.testing.assert_array_equal(train_ids.numpy(), expected)
    assert (train_ids == 255).sum() > 0  # ignored ids survive as 255
    # resizing labels never blends ids: every value stays one of the input's train ids
    photo, small = Cityscapes(root, split="val", size=24)[1]
    assert photo.shape == (3, 24, 24) and small.shape == (24, 24)
    assert set(small.unique().tolist()) <= set(np.unique(expected).tolist())


def test_cityscapes_errors_name_the_path(tmp_path):
    with pytest.raises(UserError, match="leftImg8bit") as e:
        Cityscapes(tmp_path / "none", split="train")
    assert str(tmp_path / "none") in str(e.value) and "data.root" in str(e.value)
    root, _ = _cityscapes_tree(tmp_path / "cs", split="train")
    with pytest.raises(UserError, match="gtFine"):
        Cityscapes(root, split="val")  # that split does not exist
    next((root / "gtFine" / "train" / "bremen").glob("*.png")).unlink()
    with pytest.raises(UserError, match="bremen_000001_000042_gtFine_labelIds.png"):
        Cityscapes(root, split="train")


# ---------------------------------------------------------------------------------------------
# night2day (pix2pix paired layout)


def test_split_ab_cuts_at_the_middle_column():
    pair = np.zeros((4, 10, 3), np.uint8)
    pair[:, 5:] = 200
    a, b = split_ab(pair)
    assert a.shape == b.shape == (4, 5, 3) and (a == 0).all() and (b == 200).all()
    a, b = split_ab(np.zeros((4, 11, 3), np.uint8))  # odd width: A gets W // 2 columns
    assert a.shape[1] == 5 and b.shape[1] == 6


def test_night2day_pairs(tmp_path):
    rng = np.random.default_rng(3)
    night, day = _noise(rng, 24, 24), _noise(rng, 24, 24)
    _save(tmp_path / "n2d" / "train" / "1.png", np.concatenate([night, day], axis=1))
    _save(tmp_path / "n2d" / "train" / "2.png", np.concatenate([day, night], axis=1))
    (tmp_path / "n2d" / "train" / "readme.txt").write_text("ignored")
    ds = Night2Day(tmp_path / "n2d", split="train", size=None)
    assert len(ds) == 2
    a, b = ds[0]
    assert torch.equal(a, to_model_space(night)) and torch.equal(b, to_model_space(day))
    a, b = Night2Day(tmp_path / "n2d", split="train", size=16)[1]
    assert a.shape == b.shape == (3, 16, 16)


def test_night2day_missing_folder(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "n2d" / "val")) as e:
        Night2Day(tmp_path / "n2d", split="val")
    assert "data.root" in str(e.value)
    (tmp_path / "n2d" / "val").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        Night2Day(tmp_path / "n2d", split="val")
