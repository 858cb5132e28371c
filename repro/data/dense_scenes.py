"""Embedded dense multi-task scenes: the CPU profiles' stand-in for PASCAL-Context and NYUD-v2 (DiffusionMTL).

The scenes, photo and semantic map are the embedded dataset's (`repro.data.embedded`: one
object on a sky/ground, wall or texture background, same seed -> same scenes), and every
further task is rendered from the same geometry, so the labels agree with each other:

    semseg   the embedded semantic map (13 classes: sky, ground, wall, 10 object classes)
    parts    the human-parts analogue: the parts of a "cross" (PART_CLASSES, 6 classes incl.
             background); scenes without a cross are all IGNORE (255), as PASCAL's persons
    sal      the object's mask (0/1)
    depth    float32, image-width units; a ground plane below the horizon (camera height
             0.5, cut off at depth 20), a tilted plane for walls and textures, a flattened
             dome for the object, placed in front of what it covers; 0 on the sky (no
             depth, as NYUD's holes)
    normals  float32 [3, H, W], the unit normal of that depth surface, normalize(dz/dx,
             dz/dy, -1) computed analytically (x right, y down, z away from the camera);
             0 on the sky (no normal: MTPSL's rule, `nyud_normals_valid`)
    edge     semantic boundaries, one pixel thick: label differs from the right or lower
             neighbour (PASCAL's edges are the Context label map's boundaries)

Partial labels (`assign_labels`), in the authors' mapping formats (`repro.data.partial_labels`):
one_label gives each training image one task, random_labels a random non-empty proper
subset (k uniform in 1..T-1, then k tasks; the authors' files have no image with 0 or all T).
The parts label only goes to scenes with a cross, which keeps every label alive (the
authors' low human_parts count suggests the same; design/diffusionmtl.md 1.2).
Generation: 2,000 scenes at 64 x 64 in under 10 s of one core. A seed gives identical arrays
(`content_sha256`; the .npz zip itself carries timestamps, as embedded's) and byte-identical
mapping files (`verify_dense` checks files against the generator). Generator, label settings,
storage, verification and torch view share this module (about 340 lines), as in `repro.data.embedded`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from repro.data import embedded as emb
from repro.data.partial_labels import NYUD_TASKS, PASCAL_TASKS, save_nyud_mapping, save_pascal_mapping
from repro.data.pixels import to_model_space
from repro.errors import UserError
from repro.io import atomic_save_npz, atomic_write_json

GENERATOR_VERSION = 1
PART_OBJECT = emb.OBJECT_CLASSES.index("cross")
PART_CLASSES = ("background", "head", "torso", "left_arm", "right_arm", "legs")
IGNORE = 255
SETTINGS = ("one_label", "random_labels")
_FIELDS = ("images", "labels", "semseg", "parts", "sal", "depth", "normals", "edge")
_CAMERA_HEIGHT = 0.5
_FAR = 20.0  # the ground plane is cut off at this depth (image widths)


@dataclass
class DenseSplit:
    images: np.ndarray   # uint8 [N, H, W, 3]
    labels: np.ndarray   # int64 [N] object class
    semseg: np.ndarray   # uint8 [N, H, W]
    parts: np.ndarray    # uint8 [N, H, W], 255 where there is no cross
    sal: np.ndarray      # uint8 [N, H, W] 0/1
    depth: np.ndarray    # float32 [N, H, W], 0 = no depth
    normals: np.ndarray  # float32 [N, 3, H, W], 0 = no normal
    edge: np.ndarray     # uint8 [N, H, W] 0/1

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def ids(self) -> list[str]:
        """Image ids, the keys of the PASCAL-format mapping."""
        return [f"{i:06d}" for i in range(len(self))]


def generate_dense(n: int, seed: int, resolution: int = 64, *, stream: int = 0) -> DenseSplit:
    """`n` scenes at `resolution`, deterministically from (`seed`, `stream`) (train = 0, test = 1)."""
    base = emb.generate_embedded(n, seed, resolution, stream=stream)  # validates n, seed, resolution
    s = emb._draw_scenes(np.random.default_rng([int(stream), int(seed), 0]), n)
    extra = np.random.default_rng([int(stream), int(seed), 2])  # own stream: the embedded scenes stay as they are
    s["wall_depth"] = extra.uniform(2.0, 4.0, n).astype(np.float32)
    s["wall_slope"] = extra.uniform(0.0, 1.0, n).astype(np.float32)
    obj = base.semantic >= len(emb.BACKGROUND_CLASSES)
    depth = np.empty(obj.shape, np.float32)
    normals = np.empty((n, 3, resolution, resolution), np.float32)
    parts = np.empty(obj.shape, np.uint8)
    for lo in range(0, n, emb._CHUNK):  # in chunks, as embedded._render: temporaries stay in cache
        sl = slice(lo, min(lo + emb._CHUNK, n))
        chunk = {k: v[sl] for k, v in s.items()}
        depth[sl], normals[sl] = _depth_normals(chunk, base.semantic[sl], resolution)
        parts[sl] = _parts(chunk, obj[sl], resolution)
    return DenseSplit(images=base.images, labels=base.labels, semseg=base.semantic, parts=parts,
                      sal=obj.astype(np.uint8), depth=depth, normals=normals, edge=_edges(base.semantic))


def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    t = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution  # pixel centres, as embedded._render
    return t[None, None, :], t[None, :, None]  # x [1, 1, W], y [1, H, 1]


def _per(s: dict, name: str) -> np.ndarray:
    return s[name].reshape(-1, 1, 1).astype(np.float32)


def _depth_normals(s: dict, semantic: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth z and its gradient (z_x, z_y) per surface, then n = normalize(z_x, z_y, -1)."""
    x, y = _grid(resolution)
    shape = semantic.shape
    # walls and textures: a plane z = d0 + g . (p - 1/2), g along the scene's gradient direction
    gx, gy = _per(s, "wall_slope") * np.cos(_per(s, "direction")), _per(s, "wall_slope") * np.sin(_per(s, "direction"))
    z = np.broadcast_to(_per(s, "wall_depth") + gx * (x - 0.5) + gy * (y - 0.5), shape).copy()
    zx, zy = np.broadcast_to(gx, shape).copy(), np.broadcast_to(gy, shape).copy()
    # sky/ground scenes: below the tilted horizon h(x), a ground plane z = H / (y - h(x))
    ground = (_per(s, "kind") == emb._SKY_GROUND) & (semantic == emb.GROUND)
    below = y - (_per(s, "horizon") + _per(s, "tilt") * (x - 0.5))
    far = below < _CAMERA_HEIGHT / _FAR  # the last pixels before the horizon: cut off at a far plane
    below = np.maximum(below, _CAMERA_HEIGHT / _FAR)
    z_ground = _CAMERA_HEIGHT / below
    dz_dy = np.where(far, 0, -z_ground / below)  # d/dy of H / (y - h) = -H / (y - h)^2; d/dx = +H tilt / (y - h)^2
    z = np.where(ground, z_ground, z)
    zx, zy = np.where(ground, -dz_dy * _per(s, "tilt"), zx), np.where(ground, dz_dy, zy)
    # the object: a dome of height radius/2 in front of the nearest background it covers
    obj = semantic >= len(emb.BACKGROUND_CLASSES)
    radius = _per(s, "radius")
    dx, dy = x - _per(s, "cx"), y - _per(s, "cy")
    rho2 = np.minimum((dx * dx + dy * dy) / radius**2, 0.95)  # keep the rim's slope finite
    cap = np.sqrt(1 - rho2)
    covered = np.where(obj, z, np.inf).min(axis=(1, 2), keepdims=True)
    z_obj = np.maximum(0.8 * np.where(np.isfinite(covered), covered, 1.0), 0.5 * radius + 0.2) - 0.5 * radius * cap
    slope = 0.5 / (radius * cap)  # d/dx of -r/2 sqrt(1 - rho^2) = (r/2) (dx / r^2) / sqrt(1 - rho^2)
    inside_cap = (dx * dx + dy * dy) < 0.95 * radius**2
    z = np.where(obj, z_obj, z)
    zx = np.where(obj, np.where(inside_cap, slope * dx, 0), zx)
    zy = np.where(obj, np.where(inside_cap, slope * dy, 0), zy)
    n = np.stack([zx, zy, -np.ones_like(z)], axis=1)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    sky = semantic == emb.SKY
    z[sky] = 0
    n *= ~sky[:, None]
    return z.astype(np.float32), n.astype(np.float32)


def _parts(s: dict, obj: np.ndarray, resolution: int) -> np.ndarray:
    """The cross's arms and centre in its own rotated frame; all IGNORE in scenes without a cross."""
    x, y = _grid(resolution)
    dx, dy = x - _per(s, "cx"), y - _per(s, "cy")
    cos, sin = np.cos(_per(s, "angle")), np.sin(_per(s, "angle"))
    u = (cos * dx + sin * dy) / (_per(s, "radius") * _per(s, "aspect"))  # as embedded._render
    v = (-sin * dx + cos * dy) / _per(s, "radius")
    part = np.select([(np.abs(u) <= 0.3) & (np.abs(v) <= 0.3), v < -0.3, v > 0.3, u < 0], [2, 1, 5, 3], 4)
    parts = np.where(obj, part, 0).astype(np.uint8)
    parts[s["label"] != PART_OBJECT] = IGNORE
    return parts


def _edges(semantic: np.ndarray) -> np.ndarray:
    edge = np.zeros(semantic.shape, dtype=bool)
    edge[:, :, :-1] |= semantic[:, :, :-1] != semantic[:, :, 1:]
    edge[:, :-1, :] |= semantic[:, :-1, :] != semantic[:, 1:, :]
    return edge.astype(np.uint8)


def assign_labels(setting: str, eligible: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """bool [N, T]: which tasks each image is labelled for; only `eligible` [N, T] cells can be.

    one_label: one task per image, as balanced as eligibility allows (a shuffled round robin
    over each image's eligible tasks); random_labels: k ~ U{1..T-1}, then k eligible tasks.
    """
    n, T = eligible.shape
    if setting not in SETTINGS:
        raise UserError(f"unknown partial-label setting {setting!r}: choose one of {', '.join(SETTINGS)}")
    if not eligible.any(axis=1).all():
        raise UserError("every image needs at least one task it can be labelled for")
    flags = np.zeros((n, T), dtype=bool)
    if setting == "one_label":
        counts = np.zeros(T)
        # rarest eligibility first, so that a task few images can carry gets all of them
        for i in np.argsort(eligible.sum(1) + rng.random(n), kind="stable"):
            options = np.flatnonzero(eligible[i])
            flags[i, options[np.argmin(counts[options] + rng.random(len(options)) * 0.5)]] = True
            counts[flags[i]] += 1
        return flags
    for i in range(n):
        options = np.flatnonzero(eligible[i])
        k = min(int(rng.integers(1, T)), len(options))
        flags[i, rng.choice(options, size=k, replace=False)] = True
    return flags


def eligibility(split: DenseSplit, tasks: tuple[str, ...]) -> np.ndarray:
    """bool [N, T]: parts only where the scene has a cross, every other task everywhere."""
    has_part = split.labels == PART_OBJECT
    return np.stack([has_part if t == "human_parts" else np.ones(len(split), bool) for t in tasks], axis=1)


# ----------------------------------------------------------------------------------------------
# Storage


def content_sha256(split: DenseSplit) -> str:
    h = hashlib.sha256()
    for name in _FIELDS:
        a = np.ascontiguousarray(getattr(split, name))
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_dense(path: str | Path) -> DenseSplit:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dense scenes split {path} not found: generate it with repro.data.dense_scenes.ensure_dense")
    try:
        with np.load(path) as f:
            return DenseSplit(**{name: f[name] for name in _FIELDS})
    except Exception as e:  # zip/npy errors come in many types; all mean "not a valid split"
        raise UserError(f"dense scenes split {path} is unreadable ({type(e).__name__}: {e}): delete it to regenerate") from e


def ensure_dense(root: str | Path, n_train: int, n_test: int, seed: int, resolution: int = 64) -> dict[str, Path]:
    """Make sure `root` holds both splits and the train split's four mapping files; return their paths.

    Keys: "train", "test", and "<format>/<setting>" for format pascal (5 tasks, the authors'
    `new_onelabel.pth` / `new_randomlabels.pth` format) and nyud (3 tasks, MTPSL's format).
    As `embedded.ensure_embedded`, a sidecar with the parameters and content hash is written
    last and checked before anything is reused.
    """
    root, paths = Path(root), {}
    for stream, (split_name, n) in enumerate((("train", n_train), ("test", n_test))):
        params = {"generator_version": GENERATOR_VERSION, "embedded_version": emb.GENERATOR_VERSION,
                  "split": split_name, "n": int(n), "seed": int(seed), "resolution": int(resolution), "stream": stream}
        stem = f"dense-{split_name}-n{n}-seed{seed}-res{resolution}-v{GENERATOR_VERSION}"
        npz, sidecar = root / f"{stem}.npz", root / f"{stem}.json"
        outputs = {split_name: npz}
        if split_name == "train":
            outputs |= {f"{fmt}/{setting}": root / f"{stem}.{fmt}.{name}.pth"
                        for fmt, names in (("pascal", ("new_onelabel", "new_randomlabels")), ("nyud", ("onelabel", "randomlabels")))
                        for setting, name in zip(SETTINGS, names)}
        if not _verified(npz, sidecar, params) or not all(p.is_file() for p in outputs.values()):
            split = generate_dense(n, seed, resolution, stream=stream)
            atomic_save_npz(npz, **{name: getattr(split, name) for name in _FIELDS})
            if split_name == "train":
                _write_mappings(split, seed, outputs)
            atomic_write_json(sidecar, {**params, "sha256": content_sha256(split)})
        paths |= outputs
    return paths


def mapping_flags(split: DenseSplit, seed: int) -> dict[str, np.ndarray]:
    """{"<format>/<setting>": bool [N, T]}: the training split's partial labels, per layout and setting."""
    out = {}
    for i, (fmt, tasks) in enumerate((("pascal", PASCAL_TASKS), ("nyud", NYUD_TASKS))):
        for j, setting in enumerate(SETTINGS):
            out[f"{fmt}/{setting}"] = assign_labels(setting, eligibility(split, tasks),
                                                    np.random.default_rng([int(seed), 3, i, j]))
    return out


def _write_mappings(split: DenseSplit, seed: int, outputs: dict[str, Path]) -> None:
    for key, flags in mapping_flags(split, seed).items():
        if key.startswith("pascal/"):
            save_pascal_mapping(outputs[key], dict(zip(split.ids, flags)))
        else:
            save_nyud_mapping(outputs[key], flags)


def verify_dense(root: str | Path, n_train: int, n_test: int, seed: int, resolution: int = 64) -> dict[str, Path]:
    """`ensure_dense`, then draw everything again in memory and check that the files hold exactly
    that (`python -m repro.data --verify`, the DVC data stage; data.dvc pins the bytes).
    UserError naming the first file that differs."""
    from repro.data.partial_labels import load_nyud_mapping, load_pascal_mapping

    paths = ensure_dense(root, n_train, n_test, seed, resolution)
    drawn = {name: generate_dense(n, seed, resolution, stream=stream)
             for stream, (name, n) in enumerate((("train", n_train), ("test", n_test)))}
    for name, split in drawn.items():
        if content_sha256(load_dense(paths[name])) != content_sha256(split):
            raise UserError(f"{paths[name]} differs from what the generator makes: delete it and run python -m repro.data")
    for key, flags in mapping_flags(drawn["train"], seed).items():
        if key.startswith("pascal/"):
            by_id = load_pascal_mapping(paths[key], PASCAL_TASKS)
            found = np.stack([by_id[i] for i in sorted(by_id)]) if len(by_id) == len(flags) else None
        else:
            found = load_nyud_mapping(paths[key], tasks=NYUD_TASKS)
        if found is None or found.shape != flags.shape or not (found == flags).all():
            raise UserError(f"{paths[key]} differs from the labels the generator assigns: delete it and run "
                            f"python -m repro.data")
    return paths


def _verified(npz: Path, sidecar: Path, params: dict) -> bool:
    return emb.verified(npz, sidecar, params, digest=lambda path: content_sha256(load_dense(path)))


# ----------------------------------------------------------------------------------------------
# Torch view

_TASK_FIELDS = {"semseg": "semseg", "human_parts": "parts", "sal": "sal", "normals": "normals", "edge": "edge",
                "depth": "depth"}


class DenseScenesDataset(Dataset):
    """Items: {"image": float [3, H, W] in [-1, 1], one target per task, "labelled": bool [T]}.

    Targets: class maps int64 [H, W] (semseg, human_parts, sal, edge; 255 = ignore), depth
    float [H, W] (0 = none), normals float [3, H, W] (0 = none). `flags` bool [N, T] (a
    mapping file's rows in split order) marks the labelled tasks; None labels every task.
    Targets of unlabelled tasks are still returned (batching needs them); the loss never
    reads them (`repro.nn.dense_losses`).
    """

    def __init__(self, split: DenseSplit | str | Path, tasks: tuple[str, ...], flags: np.ndarray | None = None):
        self.split = split if isinstance(split, DenseSplit) else load_dense(split)
        unknown = [t for t in tasks if t not in _TASK_FIELDS]
        if unknown or not tasks:
            raise UserError(f"unknown dense tasks {unknown or list(tasks)}: choose from {list(_TASK_FIELDS)}")
        self.tasks = tuple(tasks)
        self.flags = np.ones((len(self.split), len(tasks)), bool) if flags is None else np.asarray(flags, bool)
        if self.flags.shape != (len(self.split), len(tasks)):
            raise UserError(f"partial-label flags have shape {self.flags.shape}, expected {(len(self.split), len(tasks))}")

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"image": to_model_space(self.split.images[i]), "labelled": torch.from_numpy(self.flags[i].copy())}
        for task in self.tasks:
            a = getattr(self.split, _TASK_FIELDS[task])[i]
            item[task] = torch.from_numpy(a.astype(np.int64) if a.dtype == np.uint8 else a.copy())
        return item
