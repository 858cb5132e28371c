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
"""

from __future__ import annotations

import numpy as np

from repro.errors import UserError

WEIGHT_KINDS = ("paper", "constant", "zero")


def aggregation_weights(kind: str, T: int, value: float = 1.0) -> np.ndarray:
    """Weights ``w_k`` for code steps ``k = 0..T-1``, float64 of shape ``[T]``.

    ``paper``: ``k / (T - k)`` (see the module docstring); ``constant``: ``value`` at
    every step; ``zero``: all zeros, which turns MT-Diffusion into plain DDPM.
    """
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise UserError(f"number of diffusion steps must be a positive integer, got {T!r}")
    k = np.arange(T, dtype=np.float64)
    if kind == "paper":
        return k / (T - k)
    if kind == "constant":
        return np.full(T, float(value), dtype=np.float64)
    if kind == "zero":
        return np.zeros(T, dtype=np.float64)
    raise UserError(f"unknown aggregation weights {kind!r}; choose one of {', '.join(WEIGHT_KINDS)}")
