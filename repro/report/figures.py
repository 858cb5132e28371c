"""Figures (matplotlib, PNG and PDF): sample grids like the paper's Figures 4, 5 and 7-10, and curves."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from repro.io import atomic_write_bytes


def save_figure(fig, path: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    import matplotlib.pyplot as plt

    written = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight", metadata={"Software": None} if fmt == "png" else {"CreationDate": None})
        written.append(atomic_write_bytes(Path(path).with_suffix(f".{fmt}"), buf.getvalue()))
    plt.close(fig)
    return written


def plot_image_rows(lines: Sequence[tuple[str, np.ndarray]], path: Path, n: int, title: str | None = None,
                    captions: Sequence[Sequence[str]] | None = None,
                    formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Labelled strips of images, one per line: (label, uint8 array (N, H, W, 3)), the first
    `n` images of each; `captions[r][c]` (optional) is printed above image c of line r."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label_width = 0.09 * max((len(label) for label, _ in lines), default=0)
    height = (1.0 + 0.15 * bool(captions)) * len(lines)
    fig, axes = plt.subplots(len(lines), n, figsize=(1.0 * n + label_width, height), squeeze=False)
    for r, (label, imgs) in enumerate(lines):
        for c in range(n):
            ax = axes[r][c]
            if c < len(imgs):
                ax.imshow(imgs[c], interpolation="nearest")
                if captions and c < len(captions[r]):
                    ax.set_title(captions[r][c], fontsize=6, pad=2)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0 and label:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.subplots_adjust(top=1.0, bottom=0.0, wspace=0.04, hspace=0.25 if captions else 0.08)
    if title:   # above the top row and its captions (the saved bounding box is tight)
        fig.suptitle(title, fontsize=8, y=1.0 + (0.2 if captions else 0.05) / height, va="bottom")
    return save_figure(fig, path, formats)


def save_image_grid(path: Path, images: np.ndarray, nrow: int = 8) -> Path:
    """A plain PNG of uint8 images (N, H, W, 3), `nrow` per row, 1 px white between them (a
    job's quick look, not a figure)."""
    import torch
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2), nrow=nrow, padding=1,
                     pad_value=255)
    buf = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def plot_sample_grid(images: np.ndarray, path: Path, title: str, captions: Sequence[str] | None = None,
                     ncol: int = 8, nrow: int = 4, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """The first ncol x nrow samples (uint8 (N, H, W, 3)), with an optional caption over each
    (the label a joint model generated with its image, as in the paper's Figure 4)."""
    k = min(len(images), ncol * nrow)
    lines = [("", images[i:i + ncol]) for i in range(0, k, ncol)]
    caps = [list(captions[i:i + ncol]) for i in range(0, k, ncol)] if captions is not None else None
    return plot_image_rows(lines, path, n=min(ncol, k), title=title, captions=caps, formats=formats)


def plot_loss_curves(curves, path: Path, title: str, formats: Sequence[str] = ("png", "pdf"),
                     ylabel: str = "loss (eq. 6)") -> list[Path]:
    """Training loss against step, one line per run (long-form frame: run, step, loss)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for run, frame in curves.groupby("run", sort=False):
        ax.plot(frame["step"], frame["loss"], label=run, lw=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, formats)


def plot_loss_by_t(frame, path: Path, title: str, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Held-out loss against the timestep bucket (long form: run, k_lo, k_hi, quantity, value).
    Left: the eps MSE of every run (solid), inside (dashed) and outside (dotted) the mask where
    measured; right, if any: the modality heads' eq. 6 terms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"eps": "-", "eps_inside": "--", "eps_outside": ":"}
    heads = frame[~frame["quantity"].isin(list(style))]
    fig, axes = plt.subplots(1, 2 if len(heads) else 1, figsize=(9 if len(heads) else 5, 3.2), squeeze=False)
    colors = {run: f"C{i}" for i, run in enumerate(dict.fromkeys(frame["run"]))}
    for (run, q), part in frame.groupby(["run", "quantity"], sort=False):
        ax = axes[0][0] if q in style else axes[0][1]
        mid = (part["k_lo"] + part["k_hi"]) / 2
        label = f"{run}: {q.replace('eps_', 'eps ')}" if q != "eps" else run
        ax.plot(mid, part["value"], style.get(q, "-."), color=colors[run], marker="o", ms=3, lw=1.2, label=label)
    for ax, ylabel in zip(axes[0], ("held-out eps MSE", "head loss (eq. 6 term)")):
        ax.set_xlabel("diagnostic step k (bucket centre)")
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, formats)


LOWER_IS_BETTER = {"FID", "sFID", "LPIPS"}
LOG_SCALE = {"FID", "sFID"}


def plot_metric_curves(frame, columns: Sequence[str], path: Path, x: str, title: str,
                       formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """One panel per metric against `x`, one line per row (long-form frame: row, x, columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(3.0 * len(columns), 3.0), squeeze=False)
    for ax, col in zip(axes[0], columns):
        for row, part in frame.groupby("row", sort=False):
            ax.plot(part[x], part[col], marker="o", ms=3, lw=1.2, label=row)
        if col in LOG_SCALE and (frame[col] > 0).all():   # FID spans 50 to 800 at the smoke profile
            ax.set_yscale("log")
        better = "lower" if col in LOWER_IS_BETTER else "higher"
        ax.set_title(f"{col} ({better} is better)", fontsize=9)
        ax.set_xlabel(x.replace("_", " "), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return save_figure(fig, path, formats)


def plot_restorations(samples: dict[str, dict[int, dict[str, np.ndarray]]], path: Path, n: int = 6,
                      formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Table 1's figure (like the paper's Figures 5 and 9): for every mask count, the
    original, then each row's restoration of the same masked images (the Clean-Masked row
    shows the masked input itself).

    samples: row name -> {mask count: uint8 arrays original / masked / restored}.
    """
    counts = sorted({m for files in samples.values() for m in files})
    lines: list[tuple[str, np.ndarray]] = []
    for m in counts:
        first = next(files[m] for files in samples.values() if m in files)
        lines.append(("original", first["original"][:n]))
        for row, files in samples.items():
            if m in files:
                label = "masked" if row == "Clean-Masked" else row
                lines.append((f"m={m}: {label}", files[m]["restored"][:n]))
    return plot_image_rows(lines, path, n, formats=formats)
