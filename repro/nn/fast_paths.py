"""Switches that make the same network run faster or in less memory, without changing its
parameters or (beyond float rounding) its function.

Each switch is a constructor argument of the blocks (UNetModel / EncoderUNetModel pass it
down); `set_fast_paths` flips them on an already built model, so that a job can build a
model through its task and then choose the kernels, and a benchmark can time both.

  sdpa         torch's fused scaled_dot_product_attention instead of ADM's einsum
               attention (repro.nn.attention.attend).
  checkpoint   gradient checkpointing of every residual and attention block (ADM's
               use_checkpoint): activations inside a block are recomputed in backward,
               trading one extra forward for the activation memory.
  channels_last  NHWC memory layout of conv weights and inputs (`to_channels_last`):
               the layout cuDNN's tensor-core convolutions and oneDNN prefer.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from repro.errors import UserError
from repro.nn.attention import AttentionBlock, AttentionPool2d
from repro.nn.blocks import ResBlock


def set_fast_paths(model: nn.Module, *, sdpa: bool | None = None, checkpoint: bool | None = None) -> nn.Module:
    """Turn the attention kernel and gradient checkpointing on or off in every block of
    `model` (None: leave as built). Returns the model; parameters are untouched."""
    for module in model.modules():
        if sdpa is not None and isinstance(module, (AttentionBlock, AttentionPool2d)):
            module.use_sdpa = sdpa
        if checkpoint is not None and isinstance(module, (AttentionBlock, ResBlock)):
            module.use_checkpoint = checkpoint
    return model


def to_channels_last(x: nn.Module | Tensor) -> nn.Module | Tensor:
    """A model (its 4-D parameters, i.e. conv weights) or a 4-D input in channels_last layout.

    Other tensors (timesteps, labels, 1-D/3-D parameters) have no NHWC form and come back
    unchanged. Convert the model and its image inputs alike: a conv with either operand in
    channels_last computes in channels_last.
    """
    if isinstance(x, nn.Module):
        return x.to(memory_format=torch.channels_last)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


SWITCHES = ("use_sdpa", "use_checkpoint", "channels_last")   # a spec's `unet:` speed switches


def apply_switches(model: nn.Module, unet: Mapping[str, Any]) -> nn.Module:
    """`model` with the speed switches of a spec's `unet:` block applied (absent: as built,
    i.e. ADM's computation). Jobs call this right after building the network, so training
    and sampling of one model run the same kernels."""
    def flag(name: str) -> bool | None:
        value = unet.get(name)
        if value is not None and not isinstance(value, bool):
            raise UserError(f"unet.{name} must be true or false, got {value!r}")
        return value
    set_fast_paths(model, sdpa=flag("use_sdpa"), checkpoint=flag("use_checkpoint"))
    if flag("channels_last"):
        to_channels_last(model)
    return model
