"""DiffusionMTL's training augmentation of dense multi-task items (`train.augment`).

Items are those of the dense datasets (repro.data.dense_scenes, dense_folders): the image float
[3, H, W] in [-1, 1], class maps int64 [H, W] with 255 = ignore, `depth` float [H, W] (0 = none),
`normals` float [3, H, W] (the zero vector = none), `labelled` bool [T] (passed through). A
recipe takes one *unpadded* item and the training step's generator and returns the augmented
item; every draw comes from that generator, so a step's batch stays a function of (seed, step)
and a resumed training is bit-exact (repro/jobs/harness.py). Recipes, by name:

    none    the item as it is (smoke and tiny: their job keys and numbers are today's)
    atrc    PASCAL-Context, the authors' (ATRC's) training transforms, design/diffusionmtl.md 3:
            random scale x U(0.5, 2.0) (image bilinear, labels, normals and depth nearest, depth
            divided by the scale); a random crop to the training size, re-drawn up to 10 times
            while one semseg class covers 75% or more of its labelled pixels; a horizontal flip
            with p = 0.5 that negates the normals' x component; photometric distortion
            (brightness +-32, contrast 0.5-1.5 first or last, saturation 0.5-1.5, hue +-18 in
            OpenCV's 180-step hue, each with p = 0.5, on the 8-bit image); centred padding to the
            training size (image 0, labels 255, normals and depth 0); human parts all ignore when
            the crop holds no part (the authors' AddIgnoreRegions).
    mtpsl   NYUD-v2 (its augmentation was not released; MTPSL's RandomScaleCrop, which the
            partial-label NYUD setups use): a window of 1/s of the image, s in {1.0, 1.2, 1.5},
            at a random place, resized back to the image size (image and normals bilinear with
            aligned corners, labels and depth nearest, depth divided by s). No flip.

Where this differs from the authors' code, and why: resizing is torch's (bilinear without
antialiasing and floor-index nearest, as OpenCV's INTER_LINEAR / INTER_NEAREST), not OpenCV,
which the suite does not depend on; the HSV round trip is matplotlib's float conversion, not
OpenCV's 8-bit one (hue and saturation are quantised to 8 bits only at the end of each step);
the random numbers come from torch, not Python's `random`.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from repro.data.dense_scenes import IGNORE   # the class maps' ignore label, one definition for the dense items
AUGMENTATIONS = ("none", "atrc", "mtpsl")
ATRC_SCALE = (0.5, 2.0)
ATRC_CAT_MAX_RATIO = 0.75
ATRC_CROP_TRIES = 10
FLIP_P = 0.5
BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18            # in OpenCV's 8-bit hue unit (180 per turn)
MTPSL_SCALES = (1.0, 1.2, 1.5)

Item = dict[str, Tensor]


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _coin(g: torch.Generator, p: float = 0.5) -> bool:
    return float(torch.rand((), generator=g, dtype=torch.float64)) < p


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform in [lo, hi], both ends included (Python's random.randint)."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def _kind(key: str, value: Tensor) -> str:
    if key == "image":
        return "image"
    if key == "labelled":
        return "flags"
    if key in ("normals", "depth"):
        return key
    if value.dtype.is_floating_point:
        raise ValueError(f"dense item field {key!r} is float; class maps are integer (255 = ignore)")
    return "labels"


def _resize(x: Tensor, size: tuple[int, int], mode: str, align_corners: bool | None = None) -> Tensor:
    """`x` [H, W] or [C, H, W] resized to `size`, in its own dtype (labels stay exact integers)."""
    y = x[None] if x.dim() == 3 else x[None, None]
    out = F.interpolate(y.double() if not x.dtype.is_floating_point else y, size=size, mode=mode,
                        align_corners=align_corners)
    out = out[0] if x.dim() == 3 else out[0, 0]
    return out.to(x.dtype)


def scale(item: Mapping[str, Tensor], s: float) -> Item:
    """ATRC's RandomScaling by `s`: the new size is int(H s) x int(W s); the image bilinear,
    everything else nearest; depth divided by `s` (a closer camera sees nearer points)."""
    if s == 1.0:
        return dict(item)
    h, w = item["image"].shape[-2:]
    size = (int(h * s), int(w * s))
    out: Item = {}
    for key, x in item.items():
        kind = _kind(key, x)
        if kind == "flags":
            out[key] = x
        elif kind == "image":
            out[key] = _resize(x, size, "bilinear", align_corners=False)
        else:
            out[key] = _resize(x, size, "nearest")
            if kind == "depth":
                out[key] = out[key] / s
    return out


def crop(item: Mapping[str, Tensor], top: int, left: int, size: tuple[int, int]) -> Item:
    """The window [top, top + h) x [left, left + w) of every spatial field (clipped to the item)."""
    h, w = size
    return {k: x if _kind(k, x) == "flags" else x[..., top:top + h, left:left + w] for k, x in item.items()}


def _crop_ok(semseg: Tensor, cat_max_ratio: float) -> bool:
    """ATRC's test: more than one labelled class, and none covering `cat_max_ratio` of them."""
    _, counts = torch.unique(semseg[semseg != IGNORE], return_counts=True)
    return len(counts) > 1 and float(counts.max()) / float(counts.sum()) < cat_max_ratio


def random_crop(item: Mapping[str, Tensor], size: tuple[int, int], g: torch.Generator,
                cat_max_ratio: float = ATRC_CAT_MAX_RATIO, tries: int = ATRC_CROP_TRIES) -> Item:
    """ATRC's RandomCrop: offsets uniform in [0, max(H - h, 0)] x [0, max(W - w, 0)]; with a
    `semseg` field the window is re-drawn up to `tries` times while `_crop_ok` fails."""
    H, W = item["image"].shape[-2:]

    def draw() -> tuple[int, int]:
        return _randint(g, 0, max(H - size[0], 0)), _randint(g, 0, max(W - size[1], 0))

    top, left = draw()
    if cat_max_ratio < 1.0 and "semseg" in item:
        for _ in range(tries):
            if _crop_ok(crop(item, top, left, size)["semseg"], cat_max_ratio):
                break
            top, left = draw()
    return crop(item, top, left, size)


def hflip(item: Mapping[str, Tensor]) -> Item:
    """Mirror every spatial field left-right; a mirrored scene's normals point the other way in x."""
    out = {k: x if _kind(k, x) == "flags" else torch.flip(x, dims=[-1]) for k, x in item.items()}
    if "normals" in out:
        out["normals"] = out["normals"] * torch.tensor([-1.0, 1.0, 1.0], dtype=out["normals"].dtype)[:, None, None]
    return out


def _to_8bit(image: Tensor) -> Tensor:
    """Model space [-1, 1] -> float 0..255 on integers: truncated, as the authors' uint8 cast of
    the scaled image, except that a value within float error below an integer (an 8-bit pixel's
    round trip through model space) is that integer."""
    return ((image + 1.0) * 127.5 + 1e-4).clamp(0, 255).floor()


def _convert(x: Tensor, alpha: float = 1.0, beta: float = 0.0) -> Tensor:
    return (x * alpha + beta).clamp(0, 255).floor()


def _hsv_step(x: Tensor, channel: int, change: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply `change` to one HSV channel (H in 0..180 as OpenCV's 8-bit hue, S in 0..255) of an
    8-bit RGB image [3, H, W]."""
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    hsv = torch.from_numpy(rgb_to_hsv((x / 255.0).permute(1, 2, 0).numpy()))
    unit = 180.0 if channel == 0 else 255.0
    hsv[..., channel] = change(hsv[..., channel] * unit) / unit
    rgb = torch.from_numpy(hsv_to_rgb(hsv.clamp(0, 1).numpy())).permute(2, 0, 1)
    return (rgb * 255.0).round().clamp(0, 255).to(x.dtype)


def photometric(image: Tensor, g: torch.Generator) -> Tensor:
    """mmseg's PhotoMetricDistortion as the authors use it (module docstring), on a model-space image."""
    x = _to_8bit(image.double())
    if _coin(g):
        x = _convert(x, beta=_uniform(g, -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
    contrast_first = _coin(g)

    def contrast(x: Tensor) -> Tensor:
        return _convert(x, alpha=_uniform(g, *CONTRAST_RANGE)) if _coin(g) else x

    if contrast_first:
        x = contrast(x)
    if _coin(g):
        alpha = _uniform(g, *SATURATION_RANGE)
        x = _hsv_step(x, 1, lambda s: (s * alpha).clamp(0, 255).floor())
    if _coin(g):
        delta = _randint(g, -HUE_DELTA, HUE_DELTA - 1)
        x = _hsv_step(x, 0, lambda h: torch.remainder(h.round() + delta, 180))
    if not contrast_first:
        x = contrast(x)
    return (x / 127.5 - 1.0).to(image.dtype)


def pad(item: Mapping[str, Tensor], size: tuple[int, int]) -> Item:
    """Centre every spatial field in a `size` canvas: the image on 0, class maps on IGNORE,
    normals and depth on 0 (their "none"); a field already larger is a caller's error."""
    out: Item = {}
    for key, x in item.items():
        kind = _kind(key, x)
        if kind == "flags":
            out[key] = x
            continue
        h, w = x.shape[-2:]
        if h > size[0] or w > size[1]:
            raise ValueError(f"{key} is {h}x{w}, larger than the padded size {size[0]}x{size[1]}")
        canvas = torch.full((*x.shape[:-2], *size), IGNORE if kind == "labels" else 0, dtype=x.dtype)
        top, left = (size[0] - h) // 2, (size[1] - w) // 2
        canvas[..., top:top + h, left:left + w] = x
        out[key] = canvas
    return out


def ignore_empty_parts(item: Mapping[str, Tensor]) -> Item:
    """Human parts with no part pixel left (all background or ignore) are all ignore, as the
    authors' AddIgnoreRegions: a crop of an image's background scores nothing for parsing."""
    out = dict(item)
    parts = out.get("human_parts")
    if parts is not None and bool(((parts == 0) | (parts == IGNORE)).all()):
        out["human_parts"] = torch.full_like(parts, IGNORE)
    return out


def atrc(item: Mapping[str, Tensor], g: torch.Generator, size: tuple[int, int]) -> Item:
    """PASCAL-Context's training transforms (module docstring), to a `size` training crop."""
    out = scale(item, _uniform(g, *ATRC_SCALE))
    out = random_crop(out, size, g)
    if _coin(g, FLIP_P):
        out = hflip(out)
    out["image"] = photometric(out["image"], g)
    return ignore_empty_parts(pad(out, size))


def mtpsl(item: Mapping[str, Tensor], g: torch.Generator, size: tuple[int, int] | None = None) -> Item:
    """MTPSL's RandomScaleCrop (module docstring); the item keeps its size (`size` is unused)."""
    H, W = item["image"].shape[-2:]
    s = MTPSL_SCALES[_randint(g, 0, len(MTPSL_SCALES) - 1)]
    h, w = int(H / s), int(W / s)
    window = crop(item, _randint(g, 0, H - h), _randint(g, 0, W - w), (h, w))
    out: Item = {}
    for key, x in window.items():
        kind = _kind(key, x)
        if kind == "flags":
            out[key] = x
        elif kind in ("image", "normals"):
            out[key] = _resize(x, (H, W), "bilinear", align_corners=True)
        else:
            out[key] = _resize(x, (H, W), "nearest")
            if kind == "depth":
                out[key] = out[key] / s
    return out


RECIPES: dict[str, Callable[[Mapping[str, Tensor], torch.Generator, tuple[int, int]], Item]] = {
    "atrc": atrc, "mtpsl": mtpsl}


def augmentation(name: str, size: tuple[int, int]) -> Callable[[Mapping[str, Tensor], torch.Generator], Item] | None:
    """The recipe `name` at training size `size`, or None for `none` (no draws at all)."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}: choose one of {', '.join(AUGMENTATIONS)}")
    if name == "none":
        return None
    recipe = RECIPES[name]
    return lambda item, g: recipe(item, g, size)
