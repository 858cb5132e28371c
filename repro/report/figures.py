"""Figures (matplotlib, PNG and PDF): sample grids like the paper's Figures 5 and 9."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import Tensor

from repro.io import atomic_write_bytes


def _to_hwc(images: Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()


def save_figure(fig, path: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    import matplotlib.pyplot as plt

    written = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight", metadata={"Software": None} if fmt == "png" else {"CreationDate": None})
        written.append(atomic_write_bytes(Path(path).with_suffix(f".{fmt}"), buf.getvalue()))
    plt.close(fig)
    return written


def save_triplet_grid(path: Path, original: Tensor, masked: Tensor, restored: Tensor,
                      titles: Sequence[str] = ("original", "masked", "restored"),
                      formats: Sequence[str] = ("png",)) -> list[Path]:
    """One column per image: original / masked / restored (Figure 9's blocks, transposed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [_to_hwc(original), _to_hwc(masked), _to_hwc(restored)]
    n = len(rows[0])
    fig, axes = plt.subplots(3, n, figsize=(1.1 * n, 3.5), squeeze=False)
    for r, (imgs, title) in enumerate(zip(rows, titles)):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(imgs[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title, fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return save_figure(fig, path, formats)
