"""Mixed precision for training steps and samplers: bf16 autocast over fp32 master weights.

`torch.autocast` runs the matmuls and convolutions in bfloat16 and keeps the parameters,
their gradients and the optimiser state in float32, so an AdamW step is the same code with
and without it. bf16 has fp32's exponent range, so unlike ADM's fp16 mode
(UNetModel.convert_to_fp16, which needs loss scaling to train) no loss scale is needed;
the price is an 8-bit mantissa (relative error ~4e-3 per op). Group norms and ADM's
attention softmax compute in float32 whatever the autocast dtype (GroupNorm32, attend).
"""
from __future__ import annotations

import torch

from repro.errors import UserError

PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device | str, precision: str = "bf16") -> torch.autocast:
    """Context manager for the forward pass (and loss) of a training step or a sampler.

    precision "fp32": autocast disabled (the default computation); "bf16": bfloat16 matmuls
    and convolutions on `device` ("cpu" or "cuda"). Call backward() and the optimiser step
    outside the context, as torch's AMP recipe does.
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type
    if device_type not in ("cpu", "cuda"):
        raise UserError(f"bf16 autocast runs on cpu or cuda, not {device_type!r}")
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


# a spec's train/sample.autocast: none|bf16 (true/false are accepted as bf16/none)
AUTOCAST_SETTINGS = {None: "fp32", "none": "fp32", "bf16": "bf16", True: "bf16", False: "fp32"}


def precision_of(setting: str | None, where: str = "train.autocast") -> str:
    """The precision of a spec's `autocast` setting (none|bf16; absent: none, fp32)."""
    if setting not in AUTOCAST_SETTINGS:
        raise UserError(f"{where}={setting!r}: choose none or bf16")
    return AUTOCAST_SETTINGS[setting]
