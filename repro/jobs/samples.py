"""The one samples format: what a sampling job writes and every reader reads.

Every sampling job (`repro.jobs.sample`, `repro.jobs.generate`) leaves one file, `FILE`, in
its folder: uint8 images (as ADM saves them, so that evaluation re-runs without sampling)
and a `kind` naming which arrays it holds (`KINDS`):

    restorations  Table 1: `original` (n, H, W, 3) once, and per mask count m:
                  `masked_m{m}`, `restored_m{m}` (n, H, W, 3), `mask_m{m}` (n, H, W; 1 = kept)
    generations   Tables 2-3: `images`, `labels` (the drawn, target or generated class; -1 if
                  none) [, `mask` for restoration rows]
    translations  Table 4, night2day: `source`, `truth`, `generated` [, `ids_true`, `ids_pred`
                  (class ids of label-map targets, 255 = ignored)]
    joint         Appendix E.4: `images`, `representations` (n, D) float32
    dense         DiffusionMTL: `images` (the test inputs) and per task `final_<task>` (after
                  denoising) [, `initial_<task>` (P_init, before denoising; DiffusionMTL's
                  networks only)]: class maps uint8 (n, H, W), saliency / edge probabilities
                  and depth float32 (n, H, W), unit normals float32 (n, 3, H, W)

Restorations are written one mask count at a time (`write(.., part=m)`): a requeued job
keeps the counts already written. `read` is the only way evaluation and rendering see
samples. Beside the file, jobs leave quick-look PNG grids (`write_grids`), for looking at.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from repro.errors import UserError
from repro.io import atomic_save_npz

FILE = "samples.npz"
DENSE_TASKS = ("semseg", "human_parts", "sal", "normals", "edge", "depth")   # DiffusionMTL's outputs
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {   # kind -> (required, optional) arrays
    "restorations": (("original",), ()),
    "generations": (("images", "labels"), ("mask",)),
    "translations": (("source", "truth", "generated"), ("ids_true", "ids_pred")),
    "joint": (("images", "representations"), ()),
    "dense": (("images",), tuple(f"{stage}_{t}" for stage in ("final", "initial") for t in DENSE_TASKS)),
}
PART_ARRAYS = ("masked", "restored", "mask")   # per mask count of `restorations`


@dataclass
class Samples:
    """A sampling job's arrays and their kind, as `read` returns them."""

    kind: str
    arrays: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def parts(self) -> list[str]:
        """The mask counts of `restorations` held so far, in the order written."""
        return [k[len("restored_m"):] for k in self.arrays if k.startswith("restored_m")]

    def restorations(self, m: int | str) -> dict[str, np.ndarray]:
        """{original, masked, restored, mask} of mask count m."""
        if self.kind != "restorations":
            raise ValueError(f"these are {self.kind}, not restorations")
        return {"original": self.arrays["original"], **{a: self.arrays[f"{a}_m{m}"] for a in PART_ARRAYS}}

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))


def _check(kind: str, arrays: Mapping[str, np.ndarray]) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind of samples {kind!r}: one of {', '.join(KINDS)}")
    required, optional = KINDS[kind]
    names = set(arrays)
    if kind == "restorations":
        names -= {f"{a}_m{m}" for a in PART_ARRAYS for m in
                  {k.rsplit("_m", 1)[1] for k in arrays if "_m" in k}}
    if not set(required) <= names or not names <= set(required) | set(optional):
        raise ValueError(f"{kind} samples hold {sorted(required)} (and optionally {sorted(optional)}), "
                         f"got {sorted(arrays)}")


def path(job_dir) -> Path:
    return Path(job_dir / FILE)


def write(job_dir, kind: str, arrays: Mapping[str, np.ndarray], part: str | None = None) -> Path:
    """Write a job's samples atomically. For `restorations`, `part` is the mask count of `arrays`
    ({original, masked, restored, mask}), added to those already written."""
    if kind == "restorations":
        if part is None:
            raise ValueError("restorations are written one mask count (part) at a time")
        held = read(job_dir).arrays if exists(job_dir) else {}
        arrays = {**held, "original": arrays["original"], **{f"{a}_m{part}": arrays[a] for a in PART_ARRAYS}}
    _check(kind, arrays)
    return atomic_save_npz(path(job_dir), kind=np.array(kind), **arrays)


def exists(job_dir) -> bool:
    return path(job_dir).exists()


def read(job_dir) -> Samples:
    """The samples a job wrote (`write`). UserError for a finished job of an older layout
    (per-kind files such as restored_m4.npz, before this format): it has to be sampled again."""
    folder = path(job_dir).parent
    if not exists(job_dir) and any(folder.glob("*.npz")):
        raise UserError(f"{folder} holds samples in an older layout (no {FILE}): delete that folder "
                        f"(rm -r {folder}) and run the table again to resample it")
    with np.load(path(job_dir)) as f:
        arrays = {k: f[k] for k in f.files}
    kind = str(arrays.pop("kind"))
    _check(kind, arrays)
    return Samples(kind, arrays)


def write_grids(job_dir, samples: Samples, part: str | None = None, titles: tuple[str, str, str] | None = None,
                title: str = "") -> None:
    """Quick-look PNGs beside the samples: `grid_m{m}.png` (original / masked / restored of
    mask count `part`), else `grid.png` (translations as source / generated / truth strips)."""
    from repro.report.figures import plot_image_rows, plot_sample_grid, save_image_grid

    if samples.kind == "restorations":
        r = samples.restorations(part)
        plot_image_rows([("original", r["original"][:8]), ("masked", r["masked"][:8]),
                         ("restored", r["restored"][:8])], job_dir / f"grid_m{part}.png", n=len(r["original"][:8]),
                        formats=("png",))
    elif samples.kind == "translations":
        names = titles or ("source", "generated", "ground truth")
        lines = [(t, samples[a][:8]) for t, a in zip(names, ("source", "generated", "truth"))]
        plot_image_rows(lines, job_dir / "grid.png", n=len(lines[0][1]), formats=("png",))
    elif samples.kind == "dense":
        return   # drawn per task, before and after denoising, by repro.report.dense_figures
    elif samples.kind == "joint":
        plot_sample_grid(samples["images"], job_dir / "grid", title=title, formats=("png",))
    else:
        save_image_grid(job_dir / "grid.png", samples["images"][:64])
