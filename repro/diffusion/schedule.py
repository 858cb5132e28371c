"""Noise schedules and timestep respacing (Ho et al. 2020; Nichol & Dhariwal 2021).

Indexing convention, used by every module of `repro.diffusion`
----------------------------------------------------------------
Arrays over diffusion steps have length K and are indexed by the *code step*
``k = 0 .. K-1``. Code step ``k`` is the paper's ``t = k + 1``: ``betas[k]`` is the
paper's ``beta_{k+1}``, ``abar[k] = prod_{j<=k} alpha_j`` is ``abar_{k+1}``, and the
paper's ``abar_0 = 1`` (the clean sample) has no slot of its own (it appears as
``abar_prev[0]``). This is the convention of openai/guided-diffusion, whose networks
also receive ``k`` (not ``k + 1``) as their timestep input.
"""

from __future__ import annotations

import math

import numpy as np

from repro.errors import UserError

SCHEDULES = ("linear", "cosine")


def make_betas(name: str, T: int) -> np.ndarray:
    """The named beta schedule over ``T`` steps, float64 of shape ``[T]``.

    - ``linear``: DDPM's schedule (1e-4 .. 0.02 at T=1000), rescaled by ``1000 / T`` so
      that any ``T`` spans the same total noise as the 1000-step original.
    - ``cosine``: Improved DDPM's ``abar(s) = cos((s + 0.008) / 1.008 * pi / 2)^2``,
      discretised as ``beta_k = 1 - abar((k+1)/T) / abar(k/T)`` and capped at 0.999
      (the cap keeps the last step from being a pure-noise step with ``alpha = 0``).
    """
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise UserError(f"number of diffusion steps must be a positive integer, got {T!r}")
    if name == "linear":
        if T <= 20:
            raise UserError(f"the linear schedule needs more than 20 steps (its last beta is 20/T), got T={T}")
        scale = 1000.0 / T
        return np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
    if name == "cosine":
        return _betas_from_alpha_bar(
            T, lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2, max_beta=0.999
        )
    raise UserError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def _betas_from_alpha_bar(T: int, alpha_bar, max_beta: float) -> np.ndarray:
    """Betas whose cumulative product follows the continuous ``alpha_bar`` on [0, 1]."""
    s = np.arange(T + 1, dtype=np.float64) / T
    abar = np.array([alpha_bar(v) for v in s], dtype=np.float64)
    return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def space_timesteps(T: int, spec: str | int) -> list[int]:
    """The code steps (``0..T-1``) kept by a respaced sampler, sorted ascending.

    ``spec`` follows guided-diffusion's ``timestep_respacing``:

    - ``"ddimN"``: the grid ``range(0, T, stride)`` with the integer stride that yields
      exactly ``N`` steps (the DDIM paper's uniform schedule);
    - ``"n1,n2,..."``: split ``0..T-1`` into as many equal sections (the first ``T % m``
      one step longer) and take ``n_i`` evenly spaced steps, ends included, in section i;
    - an int ``N`` (or the string ``"N"``): ``N`` evenly spaced steps over the whole range.
    """
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        counts = [int(spec)]
    elif isinstance(spec, str) and spec.startswith("ddim"):
        return _ddim_grid(T, spec)
    elif isinstance(spec, str):
        try:
            counts = [int(part) for part in spec.split(",")]
        except ValueError:
            raise UserError(
                f"bad timestep respacing {spec!r}; use 'ddimN', an int N, or comma-separated counts like '10,15,20'"
            ) from None
    else:
        raise UserError(f"bad timestep respacing {spec!r}; use 'ddimN', an int N, or a string like '10,15,20'")

    section_len = T // len(counts)
    extra = T % len(counts)
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = section_len + (1 if i < extra else 0)
        if count < 1 or count > size:
            raise UserError(
                f"timestep respacing {spec!r}: section {i} has {size} steps, cannot take {count}; "
                "each count must be between 1 and the section length"
            )
        stride = 1.0 if count == 1 else (size - 1) / (count - 1)
        # Accumulate the fractional position and round it with Python's round(), as
        # guided-diffusion does, so that grids agree with its checkpoints' step for step
        # (j * stride can round differently at exact halves).
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


def _ddim_grid(T: int, spec: str) -> list[int]:
    try:
        wanted = int(spec[len("ddim"):])
    except ValueError:
        raise UserError(f"bad timestep respacing {spec!r}; 'ddimN' needs an integer N, e.g. 'ddim50'") from None
    for stride in range(1, T):
        grid = list(range(0, T, stride))
        if len(grid) == wanted:
            return grid
    if wanted == T == 1:
        return [0]
    raise UserError(
        f"timestep respacing {spec!r}: no integer stride gives exactly {wanted} of {T} steps; pick another N"
    )
