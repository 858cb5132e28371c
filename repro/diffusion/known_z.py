"""Algorithm 1 with the roles swapped: z_0 known, one modality x unknown (translation, Appendix E.1).

Translating a source image is generating the target modality of a model whose diffusion
space holds the source: the source is z_0, so there is no z chain to run backwards.
Every step draws z_k from eq. 4 given the known z_0 and the current estimate of x, and
re-estimates x with its head (lines 7-10 of Algorithm 1); the result is the head's
estimate at the last, least noisy, step.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from repro.diffusion.process import MTProcess


@torch.no_grad()
def sample_known_z(model: Callable, process: MTProcess, z0: Tensor, x_init: Tensor, name: str,
                   generator: torch.Generator, clip: bool = False) -> Tensor:
    """The final estimate of modality `name` given z_0; `x_init` is its random start (line 3).

    Step k: z_k ~ q(z_k | z_0, x) (eq. 4, with the current estimate of x, which the identity
    encoder maps to e), then x <- D(z_k) from the head. The chain of estimates ends at
    k = 0, where z_k is the barely noised z_0. `clip` clamps estimates to [-1, 1] (pixel
    space only). Draws one noise tensor per step from `generator`.
    """
    x = x_init
    for k in range(process.num_steps - 1, -1, -1):
        noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype)
        z = process.q_sample(z0, [x], k, noise)                                  # eq. 4 given z_0 and x
        _, preds, *_ = model(z, process.timesteps[k].repeat(len(z0)), [x])       # line 8: X~ = U-Net(z_t, t)
        x = preds[name].clamp(-1, 1) if clip else preds[name]                    # line 10: x <- X~
    return x
