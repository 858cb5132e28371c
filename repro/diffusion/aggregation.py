"""Aggregation weights ``w_t^(i)`` of the forward aggregation process (eq. 3).

The weight of step ``t`` scales how much of the modality encoding ``e_i`` is added to
the running state before the step's noise (eq. 3). Appendix E of the paper sets
``w_t^(i) = t / (1000 - t)`` "to mitigate some potentially negative influence from some
heterogeneous tasks on the generated image quality when t is small".

Indexing decision for the paper weights
---------------------------------------
Read with the paper's 1-based ``t = 1..T``, the formula divides by zero at ``t = T``
(and gives 999 at t = 999, 1/999 at t = 1). The paper's implementation follows ADM
(guided-diffusion), whose timestep variable is the 0-based code step ``k = 0..T-1``;
applying the formula to that index gives finite weights everywhere, so we read it as

    w_k = k / (T - k),   k = 0..T-1   (the paper's t = k + 1)

generalised from 1000 to any ``T``: ``w = 0`` at the first step (no modality
information is injected into nearly clean samples) and ``w = T - 1`` at the last.

The bounded reading (ours, not the paper's)
-------------------------------------------
With the paper's weights the modality term of eq. 4 dwarfs everything else in ``z_t``:
``atil_k`` reaches ~900 (cosine) and ~4500 (linear) at T = 1000, so the noise is a
fraction ~1e-6 of ``z_t``'s variance late in the chain, and a network that does not
subtract ``atil_k e`` exactly (the U-Net's first conv is not time-conditioned) must
predict eps to a relative precision of ~1e-4. ``bounded`` keeps the paper's *shape*
(no modality information near k = 0, more and more towards k = T) and rescales it by
one scalar so that ``max_k atil_k = c`` (``c = ATIL_BOUND = 1`` by default, given as
``value``). Since ``atil`` is linear in ``w`` (``atil_k = sum_{s<=k} w_s sqrt(abar_k /
abar_{s-1})``), the scale is ``c / max_k atil_k(paper)``. With ``c = 1`` and encodings of
pixel scale (|e| <= 1), the modality term is never larger than the clean image at k = 0
or the unit noise at k = T: ``z_t`` stays O(1), the network's input needs no rescaling,
and the modality is still the only thing that separates the conditional chains. The
bound depends on the noise schedule, which is why this kind needs ``betas``.
"""

from __future__ import annotations

import numpy as np

from repro.errors import UserError

WEIGHT_KINDS = ("paper", "constant", "zero", "bounded")
ATIL_BOUND = 1.0  # the bounded reading's max_k atil_k: the data's own scale in [-1, 1] pixel space


def aggregation_weights(kind: str, T: int, value: float | None = None, betas: np.ndarray | None = None) -> np.ndarray:
    """Weights ``w_k`` for code steps ``k = 0..T-1``, float64 of shape ``[T]``.

    ``paper``: ``k / (T - k)`` (see the module docstring); ``constant``: ``value`` (default
    1) at every step; ``zero``: all zeros, which turns MT-Diffusion into plain DDPM;
    ``bounded``: the paper's shape scaled so that ``max_k atil_k = value`` (default
    `ATIL_BOUND`) under the noise schedule ``betas`` (required for this kind only).
    """
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise UserError(f"number of diffusion steps must be a positive integer, got {T!r}")
    k = np.arange(T, dtype=np.float64)
    if kind == "paper":
        return k / (T - k)
    if kind == "constant":
        return np.full(T, 1.0 if value is None else float(value), dtype=np.float64)
    if kind == "zero":
        return np.zeros(T, dtype=np.float64)
    if kind == "bounded":
        bound = ATIL_BOUND if value is None else float(value)
        if not bound > 0:
            raise UserError(f"bounded aggregation weights need a positive bound on atil (weight_value), got {bound}")
        if betas is None or len(betas) != T:
            raise UserError(f"bounded aggregation weights need the noise schedule's {T} betas")
        w = k / (T - k)
        peak = atil_from_weights(w, betas).max()
        return w * (bound / peak) if peak > 0 else w  # T = 1: the paper's shape is all zero
    raise UserError(f"unknown aggregation weights {kind!r}; choose one of {', '.join(WEIGHT_KINDS)}")


def atil_from_weights(weights: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """Theorem 2 unrolled: ``atil_k = sum_{s<=k} w_s sqrt(abar_k / abar_{s-1})`` (``abar_{-1} = 1``).

    The closed form, summed as a lower-triangular ``[T, T]`` matrix of ratios formed in
    log space (every exponent is <= 0, so the tiny ``abar`` of late cosine steps neither
    overflows nor loses digits). `MTProcess` runs the recursion instead; the tests hold
    the two against each other. Works on ``[T]`` or ``[N, T]`` weights.
    """
    log_abar = np.cumsum(np.log1p(-np.asarray(betas, dtype=np.float64)))
    log_abar_prev = np.append(0.0, log_abar[:-1])
    exponent = 0.5 * (log_abar[:, None] - log_abar_prev[None, :])  # [k, s]
    ratios = np.where(np.tril(np.ones_like(exponent, dtype=bool)), np.exp(np.minimum(exponent, 0.0)), 0.0)
    return np.asarray(weights, dtype=np.float64) @ ratios.T
