"""DiffusionMTL's figure: per task, predictions before denoising (P_init), after, and the ground
truth, on the same test images (the paper's Fig. 8 compares the two stages' scores per task).

Every map is drawn as an RGB image so that `plot_image_rows` lays them out: class maps with a
fixed palette (matplotlib's tab20), saliency / edge probabilities and depth as grey levels,
unit normals as (n + 1) / 2 (the authors' visualisation, design 4).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from repro.report.figures import plot_image_rows

IGNORE = 255


def to_rgb(task: str, maps: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] of one task's predictions or targets (module docstring); ignored pixels black."""
    import matplotlib

    if task in ("semseg", "human_parts"):
        palette = (np.asarray(matplotlib.colormaps["tab20"].colors) * 255).astype(np.uint8)
        ids = maps.astype(np.int64)
        rgb = palette[ids % len(palette)]
        rgb[ids == IGNORE] = 0
        return rgb
    if task == "normals":
        return (np.clip((np.moveaxis(maps, 1, -1) + 1) / 2, 0, 1) * 255).astype(np.uint8)
    values = maps.astype(np.float64)
    if task == "depth":
        values = values / max(float(values.max()), 1e-12)
    grey = np.where(maps == IGNORE, 0, np.clip(values, 0, 1)) if task in ("sal", "edge") else np.clip(values, 0, 1)
    return np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1)


def plot_denoising(images: np.ndarray, initial: Mapping[str, np.ndarray], final: Mapping[str, np.ndarray],
                   truth: Mapping[str, np.ndarray], path: Path, title: str, n: int = 6) -> list[Path]:
    """Strips: the input, then per task `before` (P_init), `after` (denoised), `truth`."""
    lines = [("input", images[:n])]
    for task in final:
        if task in initial:
            lines.append((f"{task}: before", to_rgb(task, initial[task][:n])))
        lines.append((f"{task}: after", to_rgb(task, final[task][:n])))
        lines.append((f"{task}: truth", to_rgb(task, truth[task][:n])))
    return plot_image_rows(lines, path, n=min(n, len(images)), title=title)


def denoising_section(out_dir: Path, key: str = "diffusionmtl") -> str:
    """The results page's DiffusionMTL section: every denoised row's metrics before (P_init) and
    after denoising (from tables/curves/<key>_denoising.csv), whether denoising helped each task
    (the paper's Fig. 8 says it does on every task), and the before/after figures. "" if not run."""
    import pandas as pd

    from repro.report.paper import table_spec

    csv = Path(out_dir) / "curves" / f"{key}_denoising.csv"
    if not csv.exists():
        return ""
    frame = pd.read_csv(csv)
    spec = table_spec(key)
    columns = [c for c in spec.columns if c.name in frame.columns and c.name != "delta_m"]
    lines = [f"## DiffusionMTL: before and after denoising ({key})", "",
             "Each denoised row's test metrics from its preliminary predictions (P_init, before) and its "
             "final ones (after); the paper's Fig. 8 reports that denoising improves every task.", "",
             "| Model | " + " | ".join(f"{c.label} before → after" for c in columns) + " |",
             "|:--|" + "--:|" * len(columns)]
    for row, group in frame.groupby("row", sort=False):
        stages = group.set_index("stage")
        if "before" not in stages.index:
            continue
        cells = []
        for c in columns:
            b, a = float(stages.at["before", c.name]), float(stages.at["after", c.name])
            better = a < b if c.lower_is_better else a > b
            cells.append(f"{c.fmt(b)} → {c.fmt(a)} {'✓' if better else '✗'}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    figures = sorted((Path(out_dir) / "figures").glob(f"{key}_*_denoising.png"))
    lines += ["", *[f"- [{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in figures]]
    return "\n".join(lines) + "\n"
