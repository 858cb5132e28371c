"""Parsing of guided-diffusion's command-line model flags (the strings its scripts take).

Shared by the U-Net and the classifier factories; a bad flag is a user error.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from repro.errors import UserError

# Default channel multipliers per image size, for the U-Net and the classifier alike (ADM's
# choices; 32 and 16 added for the small profiles of this suite).
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
    16: (1, 2, 2),
}


def parse_channel_mult(value: str | tuple | list, image_size: int) -> tuple[float, ...]:
    """"" -> the default for `image_size`; "1,2,2" or a sequence -> that tuple."""
    if isinstance(value, (tuple, list)):
        return tuple(value)
    if not value:
        if image_size not in DEFAULT_CHANNEL_MULT:
            raise UserError(
                f"no default channel_mult for image_size {image_size}; set channel_mult (e.g. '1,2,2') "
                f"or use one of {sorted(DEFAULT_CHANNEL_MULT)}"
            )
        return DEFAULT_CHANNEL_MULT[image_size]
    try:
        mult = tuple(float(m) for m in str(value).split(","))
    except ValueError:
        raise UserError(f"channel_mult must be comma-separated numbers like '1,2,2', got {value!r}") from None
    return tuple(int(m) if m.is_integer() else m for m in mult)


def parse_attention_ds(value: str | tuple | list, image_size: int) -> tuple[int, ...]:
    """Resolutions at which to attend ("32,16,8") -> downsample rates (image_size // res)."""
    items = value if isinstance(value, (tuple, list)) else [v for v in str(value).split(",") if v.strip()]
    try:
        resolutions = [int(r) for r in items]
    except ValueError:
        raise UserError(
            f"attention_resolutions must be comma-separated integers like '32,16,8', got {value!r}"
        ) from None
    for r in resolutions:
        if r <= 0 or image_size % r:
            raise UserError(f"attention resolution {r} does not divide image_size {image_size}")
    return tuple(image_size // r for r in resolutions)


def parse_bool(flags: Mapping[str, Any], key: str) -> bool:
    """A boolean flag given as a bool or as guided-diffusion's strings ("True", "false", "1", ...)."""
    value = flags[key]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "t", "yes", "y", "1"):
        return True
    if text in ("false", "f", "no", "n", "0"):
        return False
    raise UserError(f"flag {key} must be True or False, got {value!r}")
