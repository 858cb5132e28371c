"""What the noise network is shown: the network-input readings of MT-Diffusion.

The paper writes the network as ``eps_theta(z_t[, X], t)`` on the ``z_t`` of eq. 4,

    z_t = sqrt(abar_t) z_0 + sum_i atil_t^(i) e_i + sqrt(1 - abar_t) eps.

With the paper's weights the modality term is hundreds of times larger than the rest
(`repro.diffusion.aggregation`), so *what the network sees* is a reading of the paper,
not a detail. Three readings, each a wrapper with the model's own call signature
``model(z_t, t, e, **kw)`` so that `training_losses` and the samplers take it unchanged:

``raw``
    ``eps_theta(z_t, t, e)``, as the paper writes it.
``shifted``
    ``eps_theta(z_t - sum_i atil_t e_i, t, e)``. ``y_t = z_t - sum_i atil_t e_i`` follows
    the plain DDPM chain (design note, "a useful identity") with the *same* eps, so this
    is an exact reparameterisation of the same model for a network that receives the
    modalities (MT-Diffusion-X): the network is a DDPM denoiser of ``y_t`` conditioned on
    ``e``, and the modality offset, which it could only cancel approximately, is removed
    in closed form. (Given ``e``, the wrapper tells a network that does not take ``e``
    about it through the shift; for those, use ``scaled``.)
``scaled``
    ``eps_theta(c_in(t) z_t, t, e)`` with ``c_in(t) = 1 / sqrt(E[z_t^2])``, the per-element
    second moment of eq. 4's marginal (EDM's input scaling, Karras et al. 2022). For a
    network that does not see the modalities (MT-Diffusion-U/M/E) the offset cannot be
    removed, but its scale can: the input stays O(1) at every step. With
    ``c = [sqrt(abar_t), atil_t^(1), ..., atil_t^(N)]`` and ``M`` the second-moment
    matrix of ``(z_0, e_1, ..., e_N)`` per element, ``E[z_t^2] = c^T M c + (1 - abar_t)``.

The step is read off the timestep the network receives (``process.timesteps``): a
respaced process keeps eq. 4's marginals at its kept steps, so the full-grid process
serves the respaced samplers too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from repro.diffusion.process import MTProcess
from repro.errors import UserError

NETWORK_INPUTS = ("raw", "shifted", "scaled")
SIGMA_DATA = 0.5  # EDM's data standard deviation, the default scale of z_0 and every e_i


@dataclass(frozen=True)
class SecondMoments:
    """Per-element second moments ``M[a, b] = E[v_a v_b]`` of ``v = (z_0, e_1, ..., e_N)``, float64 ``[N+1, N+1]``."""

    matrix: np.ndarray

    @classmethod
    def default(cls, n_modalities: int, sigma_data: float = SIGMA_DATA) -> "SecondMoments":
        """Every variable of scale ``sigma_data``, all fully correlated (``M = sigma_data^2``
        everywhere). Full correlation is the case of identity encoders (the masked image
        is the image with patches zeroed) and the larger of the plausible second moments;
        prefer `from_batch` on real training data."""
        return cls(np.full((n_modalities + 1, n_modalities + 1), float(sigma_data) ** 2))

    @classmethod
    def from_batch(cls, z0: Tensor, e: Sequence[Tensor]) -> "SecondMoments":
        """Empirical moments over every element of a batch (each ``e_i`` shaped like ``z0``)."""
        flat = torch.stack([v.detach().double().reshape(-1) for v in (z0, *e)])
        return cls((flat @ flat.T / flat.shape[1]).cpu().numpy())


class NetworkInput:
    """``model`` behind one network-input reading; call it exactly like the model.

    Holds no parameters (the optimiser and checkpoints keep seeing ``model`` itself).
    ``moments`` is used by ``scaled`` only (default: `SecondMoments.default`).
    """

    def __init__(self, model: Callable, process: MTProcess, reading: str = "raw",
                 moments: SecondMoments | None = None):
        if reading not in NETWORK_INPUTS:
            raise UserError(f"unknown network input {reading!r}; choose one of {', '.join(NETWORK_INPUTS)}")
        self.model, self.process, self.reading = model, process, reading
        self.c_in = None
        if reading == "scaled":
            moments = moments or SecondMoments.default(process.n_modalities)
            self.c_in = input_scale(process, moments)

    def __call__(self, z_t: Tensor, t: Tensor, e: Sequence[Tensor] = (), **kwargs):
        if self.reading == "raw":
            return self.model(z_t, t, e, **kwargs)
        k = self.steps_of(t)
        if self.reading == "shifted":
            return self.model(z_t - self.process.offset(e, k, z_t), t, e, **kwargs)
        return self.model(self.process.at(self.c_in, k, z_t) * z_t, t, e, **kwargs)

    def steps_of(self, t: Tensor) -> Tensor:
        """The process's step index of each network timestep (UserError if one is not on its grid)."""
        grid = self.process.timesteps
        t = torch.as_tensor(t, dtype=torch.long).cpu().reshape(-1)
        k = torch.searchsorted(grid, t).clamp(max=len(grid) - 1)
        if not torch.equal(grid[k], t):
            raise UserError("network timesteps are not on the process's grid; build the network input "
                            "with the full-grid (training) process")
        return k


def input_scale(process: MTProcess, moments: SecondMoments) -> Tensor:
    """``c_in[k] = 1 / sqrt(E[z_k^2])`` per step, float64 ``[K]`` (module docstring)."""
    M = np.asarray(moments.matrix, dtype=np.float64)
    if M.shape != (process.n_modalities + 1,) * 2:
        raise UserError(f"second moments must be [{process.n_modalities + 1}, {process.n_modalities + 1}] "
                        f"(z_0 and each modality), got {M.shape}")
    c = torch.cat([process.abar.sqrt()[None], process.atil]).numpy()  # [N+1, K]
    m2 = np.einsum("ak,ab,bk->k", c, M, c) + process.one_minus_abar.numpy()
    return torch.as_tensor(1.0 / np.sqrt(m2), dtype=torch.float64)
