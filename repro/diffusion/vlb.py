"""The variational bound term L_vlb of the hybrid objective (Nichol & Dhariwal 2021).

ADM models with a learned variance (``learn_sigma``, e.g. the released 128x128 checkpoint)
are trained with ``L_hybrid = L_simple + L_vlb`` where, for a step ``k`` drawn uniformly,

    L_vlb(k) = KL( q(z_{k-1} | z_0, z_k, X) || p(z_{k-1} | z_k) )     for k > 0
    L_vlb(0) = -log p(z_0 | z_1)   (discretised Gaussian decoder, 256 levels in [-1, 1])

in bits per dimension. ``p``'s mean comes from the *stop-gradient* eps prediction, so
L_vlb trains only the variance (the learned-range interpolation of
`MTProcess.model_variance`) and L_simple alone trains the mean. Nichol & Dhariwal write
``L_simple + lambda L_vlb`` with ``lambda = 1e-3`` and L_vlb the sum over all T steps;
one uniformly drawn step per sample, averaged over dimensions, gives that sum's
expectation divided by T = 1000, so the per-step term enters with weight 1
(`HYBRID_VLB_WEIGHT`). The MT-Diffusion posterior (eq. 5) replaces DDPM's: with all
aggregation weights zero this is exactly ADM's term.

The decoder term assumes the diffusion space is 8-bit pixels mapped to [-1, 1]
(`repro.data.pixels`); for latent spaces it is a density, not a likelihood of data.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from repro.diffusion.process import MTProcess, Step

HYBRID_VLB_WEIGHT = 1.0  # Nichol & Dhariwal's lambda = 1e-3 on the T = 1000 step sum, per drawn step
PIXEL_LEVELS = 256


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise ``KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))`` in nats."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor,
                                        levels: int = PIXEL_LEVELS) -> Tensor:
    """Elementwise log-probability (nats) of ``x`` on the grid of ``levels`` values spanning [-1, 1].

    The bin of a grid value ``x`` is ``[x - h, x + h]`` with ``h = 1 / (levels - 1)``; the
    first and last bins extend to -inf and +inf, so the probabilities over the grid sum
    to one. Probabilities are differences of normal CDFs, taken on the side of the mean
    where they do not cancel (``Phi(b) - Phi(a) = Phi(-a) - Phi(-b)``), with log-CDFs in
    the two open-ended bins.
    """
    half = 1.0 / (levels - 1)
    inv_scale = torch.exp(-log_scale)
    upper = (x - mean + half) * inv_scale
    lower = (x - mean - half) * inv_scale
    right_side = (x - mean) > 0
    inner = torch.where(
        right_side,
        torch.special.ndtr(-lower) - torch.special.ndtr(-upper),
        torch.special.ndtr(upper) - torch.special.ndtr(lower),
    )
    log_inner = torch.log(inner.clamp(min=1e-12))
    return torch.where(
        x <= -1.0 + half / 2,
        torch.special.log_ndtr(upper),
        torch.where(x >= 1.0 - half / 2, torch.special.log_ndtr(-lower), log_inner),
    )


def vlb_term(process: MTProcess, z0: Tensor, z_t: Tensor, e: Sequence[Tensor], k: Step,
             eps_pred: Tensor, var_values: Tensor) -> Tensor:
    """``L_vlb(k)`` per batch row in bits per dimension, the model mean under stop-gradient.

    ``eps_pred`` and ``var_values`` are the network's two outputs at ``(z_t, k)``;
    ``k`` a long tensor ``[B]`` (one step per row) or an int.
    """
    mean = process.mean_from_eps(z_t, eps_pred.detach(), e, k)
    _, log_var = process.model_variance(k, z_t, var_values)
    true_mean, _ = process.posterior_mean_var(z0, z_t, e, k)
    true_log_var = process.at(process.log_btil_clipped, k, z_t).expand_as(z_t)
    dims = tuple(range(1, z_t.ndim))
    kl = normal_kl(true_mean, true_log_var, mean, log_var).mean(dim=dims) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(z0, mean, 0.5 * log_var).mean(dim=dims) / math.log(2.0)
    first = torch.as_tensor(k, device=z_t.device).reshape(-1) == 0
    return torch.where(first, nll, kl)
