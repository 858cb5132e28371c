"""The forward aggregation process of MT-Diffusion (Chen et al., ICLR 2024, Sec. 2.2).

Transition (eq. 3), with ``e_i = E_i(x_i)`` the encoded modality data:

    q(z_t | z_{t-1}, X) = N( sqrt(alpha_t) (z_{t-1} + sum_i w_t^(i) e_i), (1 - alpha_t) I )

Marginal (Theorem 2, eq. 4):

    q(z_t | z_0, X) = N( sqrt(abar_t) z_0 + sum_i atil_t^(i) e_i, (1 - abar_t) I ),
    atil_t = sqrt(alpha_t) (w_t + atil_{t-1}),  atil_0 = 0

Posterior (eq. 5):

    q(z_{t-1} | z_0, z_t, X) = N( mutil_t, btil_t I ),
    mutil_t = 1/sqrt(alpha_t) (z_t - beta_t / sqrt(1 - abar_t) eps) - sum_i w_t^(i) e_i,
    btil_t  = beta_t (1 - abar_{t-1}) / (1 - abar_t)

Steps are code steps ``k = 0..K-1`` (the paper's ``t = k + 1``), see
`repro.diffusion.schedule`. All schedule quantities are precomputed in float64 and cast
to the dtype of the tensors they multiply only when used.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from repro.diffusion.aggregation import aggregation_weights
from repro.diffusion.schedule import make_betas, space_timesteps
from repro.errors import UserError

Step = Tensor | int


class MTProcess:
    """Forward aggregation process (eq. 3-5) over K steps and N modalities.

    Args:
        betas: float64 ``[K]``, the noise schedule, each in (0, 1).
        weights: float64 ``[N, K]`` aggregation weights ``w_k^(i)``; ``N`` may be 0, and
            with all weights zero the process is exactly DDPM.
        timesteps: ``[K]`` long, the timestep fed to the network at each step; ``arange(K)``
            (the default) for a full grid, the original step indices after `respace`.

    Modality encodings are passed to every method as ``e``: a sequence of N tensors,
    each shaped like ``z`` (an empty sequence means plain DDPM). Step arguments ``k``
    are a long tensor ``[B]`` (one step per batch row) or a Python int.
    """

    def __init__(self, betas: np.ndarray, weights: np.ndarray, timesteps: Tensor | None = None):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise UserError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
        if not (np.all(betas > 0) and np.all(betas < 1)):
            raise UserError("every beta must lie in (0, 1) (a beta of 1 erases z_0); check the noise schedule")
        K = len(betas)
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 2 or weights.shape[1] != K:
            raise UserError(f"aggregation weights must have shape [N, {K}], got {weights.shape}")
        if not np.all(np.isfinite(weights)):
            raise UserError("aggregation weights must be finite")
        timesteps = torch.arange(K) if timesteps is None else torch.as_tensor(timesteps, dtype=torch.long)
        if timesteps.shape != (K,):
            raise UserError(f"timesteps must have shape [{K}], got {tuple(timesteps.shape)}")

        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        abar_prev = np.append(1.0, abar[:-1])

        # Theorem 2: atil_k = sqrt(alpha_k) (w_k + atil_{k-1}), starting from atil_{-1} = 0
        # (the paper's atil_0 = 0: the clean sample carries no modality offset).
        atil = np.zeros_like(weights)
        running = np.zeros(len(weights))
        for k in range(K):
            running = np.sqrt(alphas[k]) * (weights[:, k] + running)
            atil[:, k] = running
        atil_prev = np.concatenate([np.zeros((len(weights), 1)), atil[:, :-1]], axis=1)

        # 1 - abar is kept as its own buffer: formed in float32 near abar = 1 it would lose
        # most of its digits.
        one_minus_abar = -np.expm1(np.cumsum(np.log1p(-betas)))
        one_minus_abar_prev = np.append(0.0, one_minus_abar[:-1])
        btil = betas * one_minus_abar_prev / one_minus_abar
        # btil is 0 at k = 0 (z_0 is given); like ADM, use btil at k = 1 there so that the
        # log variance is finite. It only matters for learned-range interpolation, since
        # the last sampling step adds no noise.
        log_btil_clipped = np.log(np.append(btil[1], btil[1:])) if K > 1 else np.log(betas)

        f64 = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
        self.betas = f64(betas)
        self.weights = f64(weights)
        self.timesteps = timesteps
        self.alphas = f64(alphas)
        self.abar = f64(abar)
        self.abar_prev = f64(abar_prev)
        self.one_minus_abar = f64(one_minus_abar)
        self.one_minus_abar_prev = f64(one_minus_abar_prev)
        self.atil = f64(atil)
        self.atil_prev = f64(atil_prev)
        self.btil = f64(btil)
        self.log_btil_clipped = f64(log_btil_clipped)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls,
        schedule: str,
        T: int,
        weights: str,
        n_modalities: int,
        weight_value: float = 1.0,
        respacing: str | int | None = None,
    ) -> "MTProcess":
        """Process with one named schedule and the same named weights for every modality.

        ``respacing`` (guided-diffusion's ``timestep_respacing``, see `space_timesteps`)
        returns the respaced process used for sampling with fewer steps.
        """
        if n_modalities < 0:
            raise UserError(f"number of modalities must be >= 0, got {n_modalities}")
        betas = make_betas(schedule, T)
        w = aggregation_weights(weights, T, weight_value, betas=betas)
        process = cls(betas, np.tile(w, (n_modalities, 1)))
        if respacing is None or respacing == "":
            return process
        return process.respace(space_timesteps(T, respacing))

    def respace(self, use_timesteps: Sequence[int]) -> "MTProcess":
        """The process restricted to the kept steps ``t_0 < t_1 < ... < t_{J-1}``.

        Noise (as guided-diffusion): ``alpha'_j = abar_{t_j} / abar_{t_{j-1}}`` (with
        ``abar_{t_{-1}} = 1``), so ``abar'_j = abar_{t_j}``.

        Weights: we want the respaced chain to have the same marginals (eq. 4) at the
        kept steps, i.e. ``atil'_j = atil_{t_j}``. Theorem 2's recursion on the new grid
        reads ``atil'_j = sqrt(alpha'_j) (w'_j + atil'_{j-1})``; solving for ``w'_j`` gives

            w'_j = atil_{t_j} / sqrt(alpha'_j) - atil_{t_{j-1}},   atil_{t_{-1}} = 0.

        Then one respaced transition ``N(sqrt(alpha'_j)(z + w'_j e), (1 - alpha'_j) I)``
        has mean ``sqrt(abar_{t_j}/abar_{t_{j-1}}) z + (atil_{t_j} - sqrt(alpha'_j)
        atil_{t_{j-1}}) e``: exactly the composition of the original eq. 3 steps
        ``t_{j-1}+1 .. t_j``, so the respaced process is the original one observed at the
        kept steps, and respacing to the full grid gives back the same process.
        """
        kept = sorted({int(t) for t in use_timesteps})
        if not kept or kept[0] < 0 or kept[-1] >= self.num_steps:
            raise UserError(f"respaced steps must be a non-empty subset of 0..{self.num_steps - 1}")
        idx = torch.tensor(kept)
        # beta'_j = 1 - abar_{t_j} / abar_{t_{j-1}}, formed as 1 - prod of the alphas in
        # (t_{j-1}, t_j] through log1p/expm1 so that it keeps its digits both when it is
        # tiny (early steps) and when abar is tiny (late cosine steps).
        log_alphas = np.log1p(-self.betas.numpy())
        bounds = [0] + [t + 1 for t in kept]
        betas = torch.tensor([-np.expm1(log_alphas[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])])
        atil = self.atil[:, idx]
        atil_before = torch.cat([atil.new_zeros(len(atil), 1), atil[:, :-1]], dim=1)
        weights = atil / (1 - betas).sqrt() - atil_before
        return MTProcess(betas.numpy(), weights.numpy(), self.timesteps[idx])

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @property
    def n_modalities(self) -> int:
        return len(self.weights)

    def buffers(self) -> dict[str, Tensor]:
        """Every precomputed per-step quantity, by name (for checks and tests)."""
        names = ("betas", "weights", "timesteps", "alphas", "abar", "abar_prev", "one_minus_abar",
                 "one_minus_abar_prev", "atil", "atil_prev", "btil", "log_btil_clipped")
        return {name: getattr(self, name) for name in names}

    # ------------------------------------------------------------------ eq. 3
    def step(self, z_prev: Tensor, e: Sequence[Tensor], k: Step, noise: Tensor) -> Tensor:
        """One forward transition z_{k-1} -> z_k (eq. 3)."""
        alpha = self.at(self.alphas, k, z_prev)
        beta = self.at(self.betas, k, z_prev)
        return alpha.sqrt() * (z_prev + self._weighted(self.weights, e, k, z_prev)) + beta.sqrt() * noise

    # ------------------------------------------------------------------ eq. 4
    def q_mean_var(self, z0: Tensor, e: Sequence[Tensor], k: Step) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(z_k | z_0, X) (eq. 4); the variance is broadcast to z0's shape."""
        abar = self.at(self.abar, k, z0)
        mean = abar.sqrt() * z0 + self.offset(e, k, z0)
        return mean, self.at(self.one_minus_abar, k, z0).expand_as(mean)

    def q_sample(self, z0: Tensor, e: Sequence[Tensor], k: Step, noise: Tensor) -> Tensor:
        """Sample z_k ~ q(z_k | z_0, X) with the given standard-normal noise (eq. 4)."""
        abar = self.at(self.abar, k, z0)
        one_minus_abar = self.at(self.one_minus_abar, k, z0)
        return abar.sqrt() * z0 + self.offset(e, k, z0) + one_minus_abar.sqrt() * noise

    def offset(self, e: Sequence[Tensor], k: Step, like: Tensor) -> Tensor:
        """The modality term of eq. 4, ``sum_i atil_k^(i) e_i``."""
        return self._weighted(self.atil, e, k, like)

    def offset_prev(self, e: Sequence[Tensor], k: Step, like: Tensor) -> Tensor:
        """The modality term of eq. 4 one step earlier, ``sum_i atil_{k-1}^(i) e_i`` (0 at k = 0)."""
        return self._weighted(self.atil_prev, e, k, like)

    # ------------------------------------------------------------------ eq. 5
    def posterior_mean_var(self, z0: Tensor, z_t: Tensor, e: Sequence[Tensor], k: Step) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(z_{k-1} | z_0, z_k, X) (eq. 5), by Bayes' rule.

        Prior ``q(z_{k-1} | z_0, X)`` (eq. 4, variance ``1 - abar_prev``) times the
        likelihood ``q(z_k | z_{k-1}, X)`` (eq. 3), which as a function of ``z_{k-1}`` is a
        Gaussian with mean ``z_k / sqrt(alpha) - sum_i w e_i`` and variance ``beta / alpha``.
        The precision-weighted mean has weights ``beta / (1 - abar)`` and
        ``alpha (1 - abar_prev) / (1 - abar)``, which sum to 1; the variance is ``btil``.
        Written without ``1 / (1 - abar_prev)`` so that k = 0 (prior = point mass at z_0)
        needs no special case: it gives mean z_0 and variance 0.
        """
        alpha, beta = self.at(self.alphas, k, z_t), self.at(self.betas, k, z_t)
        one_minus_abar = self.at(self.one_minus_abar, k, z_t)
        one_minus_abar_prev = self.at(self.one_minus_abar_prev, k, z_t)
        prior_mean = self.at(self.abar_prev, k, z_t).sqrt() * z0 + self.offset_prev(e, k, z_t)
        inverted_step = z_t / alpha.sqrt() - self._weighted(self.weights, e, k, z_t)
        mean = beta / one_minus_abar * prior_mean + alpha * one_minus_abar_prev / one_minus_abar * inverted_step
        return mean, self.at(self.btil, k, z_t).expand_as(mean)

    def mean_from_eps(self, z_t: Tensor, eps: Tensor, e: Sequence[Tensor], k: Step) -> Tensor:
        """``mutil_k`` of eq. 5 from the noise ``eps`` of z_k (true or predicted)."""
        alpha, beta = self.at(self.alphas, k, z_t), self.at(self.betas, k, z_t)
        one_minus_abar = self.at(self.one_minus_abar, k, z_t)
        return (z_t - beta / one_minus_abar.sqrt() * eps) / alpha.sqrt() - self._weighted(self.weights, e, k, z_t)

    def z0_from_eps(self, z_t: Tensor, eps: Tensor, e: Sequence[Tensor], k: Step) -> Tensor:
        """Eq. 4 solved for z_0: ``(z_k - sum_i atil e_i - sqrt(1 - abar) eps) / sqrt(abar)``."""
        abar = self.at(self.abar, k, z_t)
        one_minus_abar = self.at(self.one_minus_abar, k, z_t)
        return (z_t - self.offset(e, k, z_t) - one_minus_abar.sqrt() * eps) / abar.sqrt()

    def eps_from_z0(self, z_t: Tensor, z0: Tensor, e: Sequence[Tensor], k: Step) -> Tensor:
        """Eq. 4 solved for eps: ``(z_k - sqrt(abar) z_0 - sum_i atil e_i) / sqrt(1 - abar)``."""
        abar = self.at(self.abar, k, z_t)
        one_minus_abar = self.at(self.one_minus_abar, k, z_t)
        return (z_t - abar.sqrt() * z0 - self.offset(e, k, z_t)) / one_minus_abar.sqrt()

    def model_variance(self, k: Step, like: Tensor, var_values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Variance and log variance of p(z_{k-1} | z_k), broadcast to ``like``'s shape.

        Fixed small (the paper, learn_sigma False): variance ``btil`` and, as ADM, the log
        of ``btil`` clipped at k = 0 (where ``btil = 0``) to its value at k = 1, so that it
        stays finite; the noise it scales is not drawn at k = 0 anyway.
        ADM's learned range: ``log var = frac log(beta) + (1 - frac) log(btil)`` with
        ``frac = (v + 1) / 2`` for the network output ``v`` in [-1, 1].
        """
        min_log = self.at(self.log_btil_clipped, k, like)
        if var_values is None:
            return self.at(self.btil, k, like).expand_as(like), min_log.expand_as(like)
        max_log = self.at(self.betas, k, like).log()
        frac = (var_values + 1) / 2
        log_var = frac * max_log + (1 - frac) * min_log
        return log_var.exp(), log_var

    # ------------------------------------------------------------------ helpers
    def at(self, buffer: Tensor, k: Step, like: Tensor) -> Tensor:
        """``buffer[k]`` in ``like``'s dtype/device, shaped to broadcast over ``like``."""
        k = torch.as_tensor(k, dtype=torch.long).cpu()
        values = buffer[k].to(device=like.device, dtype=like.dtype)
        if values.ndim == 1:  # one step per batch row
            values = values.reshape(-1, *([1] * (like.ndim - 1)))
        return values

    def _weighted(self, coefs: Tensor, e: Sequence[Tensor], k: Step, like: Tensor) -> Tensor:
        """``sum_i coefs[i, k] e_i`` (zeros when there are no modalities)."""
        if len(e) != self.n_modalities:
            raise ValueError(f"process has {self.n_modalities} modalities but {len(e)} encodings were given")
        total = torch.zeros_like(like)
        for c_i, e_i in zip(coefs, e):
            total = total + self.at(c_i, k, like) * e_i
        return total
