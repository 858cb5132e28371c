"""Reading image files from user-held datasets: which files count as images, and failing clearly."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from repro.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # compared lower-case: ImageNet uses .JPEG


def read_image(path: Path) -> Image.Image:
    """Open an image fully (so a truncated file fails here, with its path, not later)."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path} ({type(e).__name__}: {e}): replace or delete the file") from e
