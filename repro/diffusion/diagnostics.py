"""Held-out noise-prediction error per timestep bucket: where along the chain a model has learned.

Eq. 6's eps term averaged over ``k ~ U{0..K-1}`` hides where a model fails: a model whose
error is small at most steps but large at the high-noise end (where the sampler starts and
where, with ``clip_denoised``, an eps error of ``delta`` moves the implied ``z_0`` by
``delta sqrt(1 - abar) / sqrt(abar)``) samples badly with a small training loss. So the
error is measured per bucket of steps: bucket ``b`` of ``B`` holds the steps
``[round(b K / B), round((b + 1) K / B))`` and every evaluation image gets one step drawn
uniformly from it and one noise draw.

Optionally the squared error is split into named pixel regions (the masked-image task:
inside and outside the mask), each the mean over the elements of that region pooled over
the bucket's images (so the overall error is the element-weighted mix of the regions),
and every modality head's eq. 6 term (`repro.diffusion.loss.modality_loss`) is reported
per bucket as well (the chunk means weighted by chunk size).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from repro.diffusion.loss import modality_loss
from repro.diffusion.process import MTProcess
from repro.errors import UserError

BUCKETS = 10   # the issue's [0, 100), [100, 200), ... at T = 1000


def bucket_edges(num_steps: int, buckets: int = BUCKETS) -> np.ndarray:
    """``buckets + 1`` integer edges ``0 = k_0 < ... < k_B = num_steps`` (bucket b is [k_b, k_{b+1}))."""
    if not 1 <= buckets <= num_steps:
        raise UserError(f"loss-by-step buckets must be in 1..{num_steps} (the number of diffusion steps), got {buckets}")
    return np.round(np.linspace(0, num_steps, buckets + 1)).astype(np.int64)


@dataclass
class _Sums:
    """Running sums of one bucket (squared errors and element counts; head losses x images)."""

    sq: dict[str, float]
    count: dict[str, float]
    heads: dict[str, float]
    n: int = 0


@torch.no_grad()
def eps_mse_by_step(
    model: Callable,
    process: MTProcess,
    z0: Tensor,
    x: Mapping[str, Tensor],
    encoders: Mapping[str, Callable[[Tensor], Tensor]],
    kinds: Mapping[str, str],
    generator: torch.Generator,
    *,
    regions: Mapping[str, Tensor] | None = None,
    buckets: int = BUCKETS,
    batch_size: int = 64,
    net_inputs: Mapping[str, Tensor] | None = None,
) -> list[dict[str, float]]:
    """One record per bucket: ``k_lo``, ``k_hi`` (exclusive), ``n`` (images), ``eps`` (the
    mean squared eps error over every element), ``eps_<region>`` for each of ``regions``
    (name -> ``[N, 1, H, W]`` 0/1 masks; NaN where a bucket's images hold no element of it)
    and one entry per modality in ``kinds`` (its head's eq. 6 term on the bucket's images).

    ``model(z_t, t_model, e, **net_inputs)`` as in `repro.diffusion.loss.training_losses`;
    the draws (per bucket: the steps of all images, then their noise) come from ``generator``.
    """
    regions = dict(regions or {})
    net_inputs = dict(net_inputs or {})
    edges = bucket_edges(process.num_steps, buckets)
    n = len(z0)
    records = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        k = torch.randint(int(lo), int(hi), (n,), generator=generator)
        noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype)
        s = _Sums({"eps": 0.0, **{r: 0.0 for r in regions}}, {"eps": 0.0, **{r: 0.0 for r in regions}},
                  {m: 0.0 for m in kinds})
        for a in range(0, n, batch_size):
            sl = slice(a, a + batch_size)
            e = [encode(x[name][sl]) for name, encode in encoders.items()]
            z_t = process.q_sample(z0[sl], e, k[sl], noise[sl])
            out = model(z_t, process.timesteps[k[sl]], e, **{name: v[sl] for name, v in net_inputs.items()})
            err = (out[0].float() - noise[sl].float()) ** 2
            s.sq["eps"] += float(err.sum())
            s.count["eps"] += err.numel()
            for name, region in regions.items():
                r = region[sl].to(err.dtype).expand_as(err)
                s.sq[name] += float((err * r).sum())
                s.count[name] += float(r.sum())
            for name, kind in kinds.items():
                s.heads[name] += float(modality_loss(kind, out[1][name], x[name][sl])) * len(z_t)
            s.n += len(z_t)
        record = {"k_lo": int(lo), "k_hi": int(hi), "n": s.n, "eps": s.sq["eps"] / s.count["eps"]}
        record.update({f"eps_{r}": s.sq[r] / s.count[r] if s.count[r] else float("nan") for r in regions})
        record.update({m: s.heads[m] / s.n for m in kinds})
        records.append(record)
    return records
