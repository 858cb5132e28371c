"""The embedded dataset: procedurally drawn scenes that stand in for ImageNet, Cityscapes and night2day.

Every table of the paper needs data the machine cannot download, so the tiny and smoke
profiles draw their own: each scene is one object (the class label, Table 2/3's analogue of
an ImageNet class) on a background, rendered three ways from the same geometry:

    images    the day photo                          (ImageNet / masked-image tasks, Tables 1-3)
    semantic  a per-pixel class-id map               (Cityscapes photo->labels, Table 4)
    night     the same scene at night                (night2day, Table 4)

Backgrounds are one of four kinds with random colours: a linear gradient, stripes, a
sky/ground split with a tilted horizon, or a smooth noise texture. Night keeps the geometry
and makes the scene darker, bluer (blue channel kept best), flatter (contrast x0.7), with a
darker sky and up to three small warm light sources.

Scene parameters live in normalised [0, 1] coordinates and come from one generator, pixel
noise from a second one, so a seed gives the same scenes at 16x16 and at 32x32, only sampled
more coarsely. 10,000 scenes at 32x32 take about 2 s of one core.

Object classes (label = index), each with a characteristic but noisy colour:

    0 disc  1 square  2 triangle  3 cross  4 ring  5 star  6 diamond  7 hbar  8 vbar  9 ellipse

Semantic classes (`SEMANTIC_CLASSES`, ids 0..12, colours in `SEMANTIC_PALETTE`):

    0 sky       above the horizon of a sky/ground scene
    1 ground    textured regions (below the horizon, and noise-texture backgrounds)
    2 wall      smooth man-made backgrounds (gradients, stripes)
    3 + label   the object's pixels

Why one module of ~400 lines: the scene generator, its file format (npz + sidecar with the
content hash) and the check that a file on disk is exactly what the generator makes for these
parameters are one thing, the bytes `data.dvc` pins; splitting them would put the definition of
those bytes in three places.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from repro.data.pixels import to_model_space
from repro.errors import UserError
from repro.io import atomic_save_npz, atomic_write_json

# Bump when the drawing changes: cached splits carry it and are regenerated on mismatch.
GENERATOR_VERSION = 1

OBJECT_CLASSES = ("disc", "square", "triangle", "cross", "ring", "star", "diamond", "hbar", "vbar", "ellipse")
NUM_CLASSES = len(OBJECT_CLASSES)
BACKGROUND_CLASSES = ("sky", "ground", "wall")
SKY, GROUND, WALL = range(3)
SEMANTIC_CLASSES = BACKGROUND_CLASSES + OBJECT_CLASSES
NUM_SEMANTIC_CLASSES = len(SEMANTIC_CLASSES)
SEMANTIC_PALETTE = np.array(
    [
        [70, 130, 180],   # sky       (Cityscapes' sky colour)
        [152, 251, 152],  # ground    (Cityscapes' terrain colour)
        [70, 70, 70],     # wall      (Cityscapes' building colour)
        [220, 20, 60],    # disc
        [0, 0, 230],      # square
        [0, 160, 0],      # triangle
        [250, 220, 0],    # cross
        [200, 0, 200],    # ring
        [255, 128, 0],    # star
        [0, 220, 220],    # diamond
        [255, 255, 255],  # hbar
        [120, 60, 0],     # vbar
        [0, 0, 0],        # ellipse
    ],
    dtype=np.uint8,
)

# Per object class: typical colour (RGB), base rotation and rotation jitter (degrees). Shapes
# that would turn into another class under rotation (square <-> diamond, hbar <-> vbar) only
# get a small jitter; rotation-free shapes get any angle.
_COLOR = np.array(
    [[215, 45, 40], [45, 75, 215], [40, 175, 60], [230, 205, 40], [195, 55, 195],
     [245, 140, 30], [40, 195, 205], [235, 235, 235], [135, 80, 35], [250, 150, 180]],
    dtype=np.float32,
)
_ROT_BASE = np.deg2rad(np.array([0, 0, 0, 0, 0, 0, 45, 0, 0, 0], dtype=np.float32))
_ROT_JITTER = np.deg2rad(np.array([180, 15, 180, 20, 180, 180, 15, 12, 12, 180], dtype=np.float32))

_GRADIENT, _STRIPES, _SKY_GROUND, _TEXTURE = range(4)
_TEXTURE_GRID = 6  # coarse noise lattice, fixed so that textures do not depend on resolution


@dataclass
class EmbeddedSplit:
    """One split: N scenes rendered as day photo, night photo, label and semantic map."""

    images: np.ndarray    # uint8 [N, H, W, 3] day
    night: np.ndarray     # uint8 [N, H, W, 3] same geometry at night
    labels: np.ndarray    # int64 [N] object class
    semantic: np.ndarray  # uint8 [N, H, W] ids into SEMANTIC_CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])


# ----------------------------------------------------------------------------------------------
# Drawing


def _shape_inside(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Is the point (u, v), in the object's own frame (radius 1), inside a shape of class `label`?"""
    r2 = u * u + v * v
    au, av = np.abs(u), np.abs(v)
    name = OBJECT_CLASSES[label]
    if name == "disc":
        return r2 <= 1.0
    if name in ("square", "diamond"):  # a diamond is a square standing on its corner
        return np.maximum(au, av) <= 0.78
    if name == "triangle":  # equilateral, circumradius 1: inside all three edge half-planes
        inside = v <= 0.5
        for angle in (np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= np.cos(angle) * u + np.sin(angle) * v <= 0.5
        return inside
    if name == "cross":
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if name == "ring":
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if name == "star":  # five points: the radius swings between 0.4 and 1 with the angle
        spike = (0.5 + 0.5 * np.cos(5.0 * np.arctan2(v, u))) ** 2
        return np.sqrt(r2) <= 0.4 + 0.6 * spike
    if name == "hbar":
        return (au <= 1.0) & (av <= 0.3)
    if name == "vbar":
        return (au <= 0.3) & (av <= 1.0)
    if name == "ellipse":
        return u * u + (v / 0.5) ** 2 <= 1.0
    raise AssertionError(name)


def _bilinear_matrix(size: int, grid: int) -> np.ndarray:
    """[size, grid] weights that resample a `grid`-point lattice on [0, 1] at `size` pixel centres."""
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * (grid - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), grid - 2)
    frac = pos - lo
    w = np.zeros((size, grid), dtype=np.float32)
    w[np.arange(size), lo] = 1.0 - frac
    w[np.arange(size), lo + 1] = frac
    return w


# Scenes rendered at a time: keeps temporaries small enough to stay in cache (3x faster than
# one pass). The noise stream is consumed chunk by chunk, so changing it changes the data.
_CHUNK = 256


def generate_embedded(n: int, seed: int, resolution: int = 32, *, stream: int = 0) -> EmbeddedSplit:
    """Draw `n` scenes at `resolution` x `resolution`, deterministically from (`seed`, `stream`).

    `stream` separates splits drawn from one seed (train = 0, test = 1 in `ensure_embedded`).
    Classes are balanced: label i % NUM_CLASSES, shuffled, so every class occurs once n >= 10.
    """
    if n < 0:
        raise UserError(f"embedded dataset size must be >= 0, got n={n}")
    if resolution < 8:
        raise UserError(f"embedded dataset resolution must be >= 8, got {resolution}")
    if seed < 0 or stream < 0:
        raise UserError(f"embedded dataset seed must be >= 0, got seed={seed}, stream={stream}")
    scenes = _draw_scenes(np.random.default_rng([int(stream), int(seed), 0]), n)
    # Pixel noise has its own generator so that the scenes do not depend on the resolution.
    noise_rng = np.random.default_rng([int(stream), int(seed), 1])
    split = EmbeddedSplit(
        images=np.empty((n, resolution, resolution, 3), np.uint8),
        night=np.empty((n, resolution, resolution, 3), np.uint8),
        labels=scenes["label"],
        semantic=np.empty((n, resolution, resolution), np.uint8),
    )
    for lo in range(0, n, _CHUNK):
        sl = slice(lo, min(lo + _CHUNK, n))
        split.images[sl], split.night[sl], split.semantic[sl] = _render({k: v[sl] for k, v in scenes.items()}, resolution, noise_rng)
    return split


def _draw_scenes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Every random choice of a scene except pixel noise, in normalised coordinates; [n, ...] arrays."""

    def uniform(lo: float, hi: float, *shape: int) -> np.ndarray:
        return rng.uniform(lo, hi, size=(n, *shape)).astype(np.float32)

    s: dict[str, np.ndarray] = {}
    s["label"] = label = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int64)
    # background: kind, two colours, direction (gradient and stripes), stripe frequency/phase,
    # horizon height/tilt (sky/ground), sky colours, coarse noise lattice (textures)
    s["kind"] = rng.integers(0, 4, size=n)
    s["bg_a"], s["bg_b"] = uniform(0, 255, 3), uniform(0, 255, 3)
    s["direction"] = uniform(0, 2 * np.pi)
    s["stripe_freq"], s["stripe_phase"] = uniform(1.5, 4.0), uniform(0, 2 * np.pi)
    s["horizon"], s["tilt"] = uniform(0.3, 0.7), uniform(-0.3, 0.3)
    s["sky_top"] = np.stack([uniform(40, 150), uniform(100, 190), uniform(170, 255)], axis=1)
    s["sky_low"] = s["sky_top"] + uniform(30, 80, 1)  # hazier towards the horizon
    s["lattice"] = uniform(0, 1, _TEXTURE_GRID, _TEXTURE_GRID)
    # object: size, aspect, centre (kept mostly inside the frame), rotation, colour, shading
    s["radius"] = radius = uniform(0.2, 0.32)
    s["aspect"] = uniform(0.9, 1.1)
    s["cx"] = radius * 0.9 + uniform(0, 1) * (1 - 1.8 * radius)
    s["cy"] = radius * 0.9 + uniform(0, 1) * (1 - 1.8 * radius)
    s["angle"] = _ROT_BASE[label] + uniform(-1, 1) * _ROT_JITTER[label]
    off_palette = rng.random(n) < 0.1  # the colour tendency is a tendency, not a rule
    typical = _COLOR[label] + 30 * rng.standard_normal((n, 3)).astype(np.float32)
    s["color"] = np.where(off_palette[:, None], uniform(0, 255, 3), typical) * uniform(0.75, 1.15, 1)
    s["shade_dir"] = uniform(0, 2 * np.pi)
    # night: per-channel gain (blue kept best), up to three small warm lights
    s["night_gain"] = uniform(0.8, 1.2, 1) * np.array([0.28, 0.32, 0.5], dtype=np.float32)
    s["n_lights"] = rng.integers(0, 4, size=n)
    s["light_xy"] = uniform(0, 1, 3, 2)
    s["light_sigma"] = uniform(0.015, 0.035, 3)
    return s


def _render(s: dict[str, np.ndarray], resolution: int, noise_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise scenes `s` at `resolution`: (day uint8 [n,H,W,3], night uint8 [n,H,W,3], semantic uint8 [n,H,W])."""
    n, H, W, f32 = len(s["label"]), resolution, resolution, np.float32
    t = (np.arange(resolution, dtype=f32) + 0.5) / resolution
    y = t[None, :, None]  # rows grow downwards
    x = t[None, None, :]

    def per(name: str) -> np.ndarray:  # scalar-per-scene parameter, broadcast over pixels
        return s[name].reshape(n, 1, 1)

    def rgb(a: np.ndarray) -> np.ndarray:  # [n, 3] colour, broadcast over pixels
        return a[:, None, None, :]

    # background: a mixing weight in [0, 1] between two colours, and the region it belongs to
    kind = per("kind")
    proj = np.cos(per("direction")) * x + np.sin(per("direction")) * y
    gradient = (proj - proj.min(axis=(1, 2), keepdims=True)) / (np.ptp(proj, axis=(1, 2), keepdims=True) + 1e-6)
    stripes = 0.5 + 0.5 * np.tanh(3.0 * np.sin(2 * np.pi * per("stripe_freq") * proj + per("stripe_phase")))
    interp = _bilinear_matrix(resolution, _TEXTURE_GRID)
    texture = interp @ s["lattice"] @ interp.T
    is_sky = (kind == _SKY_GROUND) & (y < per("horizon") + per("tilt") * (x - 0.5))
    weight = np.select([kind == _GRADIENT, kind == _STRIPES, is_sky], [gradient, stripes, np.minimum(y / per("horizon"), 1)], texture)
    bg = rgb(s["bg_a"]) + weight[..., None] * rgb(s["bg_b"] - s["bg_a"])
    sky_i = np.nonzero(is_sky)[0]  # scene index of each sky pixel; sky is a small part of the data
    bg[is_sky] = s["sky_top"][sky_i] + weight[is_sky][:, None] * (s["sky_low"] - s["sky_top"])[sky_i]
    semantic = np.select([is_sky, kind >= _SKY_GROUND], [SKY, GROUND], WALL).astype(np.uint8)

    # the object, in its own rotated frame scaled to radius 1
    dx, dy = x - per("cx"), y - per("cy")
    cos, sin = np.cos(per("angle")), np.sin(per("angle"))
    u = (cos * dx + sin * dy) / (per("radius") * per("aspect"))
    v = (-sin * dx + cos * dy) / per("radius")
    inside = np.zeros((n, H, W), dtype=bool)
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(s["label"] == c)
        if len(idx):
            inside[idx] = _shape_inside(c, u[idx], v[idx])
    obj_i = np.nonzero(inside)[0]  # scene index of each object pixel
    semantic[inside] = len(BACKGROUND_CLASSES) + s["label"][obj_i]

    # Keep the object visible: if its colour is close to the background it covers, push its
    # brightness to the opposite end (a small CNN should learn shape and colour, not guess).
    color = s["color"]
    area = np.maximum(np.bincount(obj_i, minlength=n), 1)
    covered = bg[inside]
    bg_under = np.stack([np.bincount(obj_i, covered[:, ch], minlength=n) for ch in range(3)], axis=1) / area[:, None]
    too_close = (np.linalg.norm(color - bg_under, axis=1) < 90)[:, None]
    bright_bg = (bg_under.mean(axis=1) > 110)[:, None]
    color = np.where(too_close & bright_bg, color * 0.3, np.where(too_close, 255 - (255 - color) * 0.3, color))
    shade = 1 + 0.12 * (np.cos(per("shade_dir")) * dx + np.sin(per("shade_dir")) * dy) / per("radius")
    day = bg
    day[inside] = np.clip(color, 0, 255)[obj_i] * shade[inside][:, None]

    # pixel noise: a fine grain, stronger on ground (its texture), shared by the three channels
    grain = noise_rng.standard_normal((n, H, W), dtype=f32)
    grain *= np.where(semantic == GROUND, f32(14), f32(4))
    day += grain[..., None]
    np.clip(day, 0, 255, out=day)

    # night: same geometry, darker, bluer, flatter (contrast 0.7 around the mean), small warm lights
    night = day * rgb(s["night_gain"])
    night[semantic == SKY] *= f32(0.45)  # the sky goes darkest
    mean = night.mean(axis=(1, 2, 3), keepdims=True)
    night *= f32(0.7)
    night += f32(0.3) * mean
    glow = np.zeros((n, H, W), dtype=f32)
    for k in range(3):
        lit = np.flatnonzero(s["n_lights"] > k)
        lx, ly, sigma = (a[lit, k].reshape(-1, 1, 1) for a in (s["light_xy"][..., 0], s["light_xy"][..., 1], s["light_sigma"]))
        glow[lit] += np.exp(-((x - lx) ** 2 + (y - ly) ** 2) / (2 * sigma**2))
    night += f32(200) * glow[..., None] * np.array([1.0, 0.85, 0.6], dtype=f32)
    night += f32(3) * noise_rng.standard_normal((n, H, W, 1), dtype=f32)  # sensor noise

    return _to_uint8(day), _to_uint8(night), semantic


def _to_uint8(a: np.ndarray) -> np.ndarray:
    np.clip(a, 0, 255, out=a)
    return np.rint(a, out=a).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Storage

_FIELDS = ("images", "night", "labels", "semantic")


def content_sha256(split: EmbeddedSplit) -> str:
    """sha256 of the arrays themselves (names, dtypes, shapes, bytes): independent of how the .npz is compressed."""
    h = hashlib.sha256()
    for name in _FIELDS:
        a = np.ascontiguousarray(getattr(split, name))
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_split(split: EmbeddedSplit, path: str | Path) -> Path:
    """Write `split` to `path` (.npz), atomically."""
    return atomic_save_npz(path, **{name: getattr(split, name) for name in _FIELDS})


def load_split(path: str | Path) -> EmbeddedSplit:
    """Read a split written by `save_split`; a missing or damaged file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"embedded split {path} not found: generate it with repro.data.ensure_embedded")
    try:
        with np.load(path) as f:
            arrays = {name: f[name] for name in _FIELDS}
    except Exception as e:  # zip/npy errors come in many types; all mean "not a valid split"
        raise UserError(f"embedded split {path} is unreadable ({type(e).__name__}: {e}): delete it to regenerate") from e
    return EmbeddedSplit(**arrays)


def ensure_embedded(root: str | Path, n_train: int | None, n_test: int | None, seed: int, resolution: int
                    ) -> dict[str, Path]:
    """Make sure `root` holds the train and test splits for these parameters; return their paths.
    A split whose size is None is neither made nor returned (a training job never reads the
    test split, so its size is not part of that job's config).

    Each split `<name>.npz` has a sidecar `<name>.json` with the parameters and the content
    sha256. A split is reused only if the sidecar matches and the hash verifies; otherwise it is
    drawn again (the sidecar is written last, so an interrupted write is never trusted).
    """
    root = Path(root)
    paths = {}
    for stream, (split_name, n) in enumerate((("train", n_train), ("test", n_test))):
        if n is None:
            continue
        params = {"generator_version": GENERATOR_VERSION, "split": split_name, "n": int(n),
                  "seed": int(seed), "resolution": int(resolution), "stream": stream}
        stem = f"embedded-{split_name}-n{n}-seed{seed}-res{resolution}-v{GENERATOR_VERSION}"
        npz, sidecar = root / f"{stem}.npz", root / f"{stem}.json"
        if not verified(npz, sidecar, params):
            split = generate_embedded(n, seed, resolution, stream=stream)
            save_split(split, npz)
            atomic_write_json(sidecar, {**params, "sha256": content_sha256(split)})
        paths[split_name] = npz
    return paths


def verified(npz: Path, sidecar: Path, params: dict, digest=None) -> bool:
    """Whether `npz` is what its generator makes for `params`: the sidecar names the same
    parameters and the content hash (`digest(npz)`, default: an embedded split's) matches."""
    digest = digest or (lambda path: content_sha256(load_split(path)))
    try:
        meta = json.loads(sidecar.read_text())
        if {k: meta.get(k) for k in params} != params:
            return False
        return digest(npz) == meta["sha256"]
    except (OSError, ValueError, KeyError, UserError):
        return False


# ----------------------------------------------------------------------------------------------
# Torch view

_IMAGE_FIELDS = {"image": "images", "night": "night"}
_ALL_FIELDS = ("image", "night", "label", "semantic")


class EmbeddedDataset(Dataset):
    """Torch view of a split: each item is a tuple of the requested `fields`.

    Fields: "image" (day) and "night" as float [3, H, W] in [-1, 1]; "label" as int;
    "semantic" as int64 [H, W]. The defaults mirror the real loaders so tasks need no special case:
    ("image", "label") ~ ImageNet, ("image", "semantic") ~ Cityscapes photo->labels,
    ("night", "image") ~ night2day (A = night, B = day).
    """

    def __init__(self, split: EmbeddedSplit | str | Path, fields: Sequence[str] = ("image", "label")):
        self.split = split if isinstance(split, EmbeddedSplit) else load_split(split)
        unknown = [f for f in fields if f not in _ALL_FIELDS]
        if unknown or not fields:
            raise UserError(f"unknown embedded dataset fields {unknown or list(fields)}: choose from {list(_ALL_FIELDS)}")
        self.fields = tuple(fields)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple:
        return tuple(self._field(name, i) for name in self.fields)

    def _field(self, name: str, i: int):
        if name in _IMAGE_FIELDS:
            return to_model_space(getattr(self.split, _IMAGE_FIELDS[name])[i])
        if name == "label":
            return int(self.split.labels[i])
        return torch.from_numpy(self.split.semantic[i].astype(np.int64))
