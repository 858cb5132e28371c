"""Samplers for MT-Diffusion: Algorithm 1 (`algorithm1`), its DDIM form, and SDEdit.

Its variants live beside this module: classifier guidance (`repro.diffusion.guidance`),
the known-z loop of translation (`repro.diffusion.known_z`) and the masked restoration
(`repro.diffusion.restoration`).

All samplers share one loop (Algorithm 1 of the paper, Appendix C): at every step the
modality data ``X`` is encoded, one network pass gives the noise estimate and every
head's prediction, modalities that were not given are replaced by their predictions,
and ``z`` moves one step back. Only the last line (how ``z_{k-1}`` is drawn) differs
between samplers.

``model(z_t, t_model, e)`` returns ``(eps, preds)`` or ``(eps, preds, var_values)`` with
``preds`` a dict of head outputs by modality name and ``var_values`` in [-1, 1] ADM's
learned-range interpolation value (None or absent: the fixed small variance ``btil``).

Random numbers are drawn only from ``generator`` (on its device), in a fixed order: the
prior ``z`` first, then one noise tensor after the network call of every step but the
last, so a seed fixes the samples (and matches a loop over a `diffusers` scheduler).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from repro.diffusion.process import MTProcess
from repro.errors import UserError

PRIORS = ("paper", "shifted")

# guidance(z_t, t_model) -> grad_z log p(y | z_t), shaped like z_t (ADM's cond_fn without its scale)
Guidance = Callable[[Tensor, Tensor], Tensor]
# update(z_t, eps, var_values, e, k, t_model, noise) -> z_{k-1}
_Update = Callable[[Tensor, Tensor, "Tensor | None", list, int, Tensor, "Tensor | None"], Tensor]


@dataclass
class Modality:
    """One modality at inference time.

    ``encode`` is ``E_i`` (data -> diffusion space). A modality with ``known`` data is
    held fixed (conditional generation); otherwise it starts from ``init`` (random data
    that the caller provides, Algorithm 1 line 3) and is re-estimated by its head at
    every step.
    """

    name: str
    encode: Callable[[Tensor], Tensor]
    known: Tensor | None = None
    init: Tensor | None = None


def algorithm1(
    model: Callable,
    process: MTProcess,
    shape: Sequence[int],
    modalities: list[Modality],
    *,
    prior: str = "paper",
    generator: torch.Generator,
    clip_denoised: bool = False,
    guidance: Guidance | None = None,
    guidance_scale: float = 0.0,
    start_step: int | None = None,
    z_start: Tensor | None = None,
    progress: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Algorithm 1 of the paper (Appendix C, "MT-Diffusion Inference"), in its variable names:

        1: z_T ~ N(0, I)
        2: if modality data x_i (for all i) not initially available then
        3:     randomly initialise modality data x_i
        4: end if
        5: for t = T, ..., 1 do
        6:     eps ~ N(0, I) if t > 1, else eps = 0
        7:     e_i = E_i(x_i), for all i                       (modality data encoding)
        8:     eps_theta(z_t, t), X~ = U-Net(z_t, t)          (estimated noise, predicted modality data)
        9:     if x_i (for all i) not initially available then
        10:        update x_i from the new X~, for all i
        11:    end if
        12:    z_{t-1} = 1/sqrt(alpha_t) (z_t - beta_t/sqrt(1 - abar_t) eps_theta(z_t, x, t))
                       - sum_i w_t^(i) e_i + sigma_t eps      (eq. 5's mean mutil_t; sigma_t^2 = btil_t)
        13: end for
        14: return z_0, X

    The code counts steps ``k = t - 1 = K-1 .. 0`` (``process.num_steps = K``, respaced).
    Line 3 is the caller's: a modality is either ``known`` (held fixed: conditional
    generation) or starts from its ``init`` (joint generation).

    ``prior``: ``"paper"`` starts from ``z ~ N(0, I)`` as line 1; ``"shifted"`` from
    ``sum_i atil e_i + N(0, I)``, the modality-shifted mean of eq. 4. ``clip_denoised``
    clamps the implied z_0 to [-1, 1] and takes the posterior mean (eq. 5) from it.
    ``guidance`` adds ADM's classifier guidance, ``mean += scale * var * grad``
    (`repro.diffusion.guidance`). ``start_step``/``z_start`` start the chain at step
    ``start_step`` from ``z_start`` (SDEdit); without ``z_start`` the prior is drawn at that step.
    Returns ``z_0`` and the final modality data by name (known ones unchanged).
    """

    def update(z, eps, var_values, e, k, t_model, noise):
        # Line 12: the posterior mean mutil_t(z_t, eps_theta) of eq. 5 (with the offsets w_t e_i) ...
        if clip_denoised:
            z0 = process.z0_from_eps(z, eps, e, k).clamp(-1, 1)
            mean, _ = process.posterior_mean_var(z0, z, e, k)
        else:
            mean = process.mean_from_eps(z, eps, e, k)
        var, log_var = process.model_variance(k, z, var_values)
        if guidance is not None:   # ... moved by classifier guidance (ADM), not in the paper ...
            mean = mean + guidance_scale * var * _guidance_grad(guidance, z, t_model)
        if noise is None:          # ... noise-free at t = 1 (line 6: eps = 0) ...
            return mean
        return mean + (0.5 * log_var).exp() * noise   # ... plus sigma_t eps

    return _sampling_loop(
        model, process, shape, modalities, update, prior=prior, generator=generator,
        start_step=start_step, z_start=z_start, progress=progress, dtype=dtype,
    )


def ddim_sample(
    model: Callable,
    process: MTProcess,
    shape: Sequence[int],
    modalities: list[Modality],
    *,
    prior: str = "paper",
    generator: torch.Generator,
    clip_denoised: bool = False,
    guidance: Guidance | None = None,
    guidance_scale: float = 0.0,
    start_step: int | None = None,
    z_start: Tensor | None = None,
    progress: bool = False,
    dtype: torch.dtype = torch.float32,
    eta: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DDIM (Song et al. 2021) generalised to the aggregation process.

    ``y_k = z_k - sum_i atil_k e_i`` follows the plain DDPM chain (eq. 4 with the modality
    term removed), so DDIM runs on ``y`` and the result is shifted back with the offset
    of the previous step:

        z_{k-1} = sqrt(abar_prev) z0_hat + sqrt(1 - abar_prev - sigma^2) eps + sum_i atil_{k-1} e_i + sigma noise
        sigma^2 = eta^2 btil_k   (DDIM's eta^2 (1-abar_prev)/(1-abar) (1 - abar/abar_prev))

    ``eta = 1`` gives the ancestral sampler's mean and variance; ``eta = 0`` is
    deterministic after the prior. Guidance follows ADM's ``condition_score``:
    ``eps -= sqrt(1 - abar) * scale * grad``. Other arguments as `algorithm1`
    (a learned variance, if the model returns one, is unused).
    """

    def update(z, eps, var_values, e, k, t_model, noise):
        z0 = process.z0_from_eps(z, eps, e, k)
        if clip_denoised:
            z0 = z0.clamp(-1, 1)
        if guidance is not None:
            # eps -> eps - sqrt(1 - abar) s grad moves z0_hat (eq. 4 solved for z_0) by
            # (1 - abar) / sqrt(abar) s grad; applied to z0_hat so that s = 0 changes no bit.
            shift = process.at(process.one_minus_abar, k, z) / process.at(process.abar, k, z).sqrt()
            z0 = z0 + shift * guidance_scale * _guidance_grad(guidance, z, t_model)
        eps = process.eps_from_z0(z, z0, e, k)
        sigma2 = eta**2 * process.at(process.btil, k, z)
        one_minus_abar_prev = process.at(process.one_minus_abar_prev, k, z)
        y_prev = (
            process.at(process.abar_prev, k, z).sqrt() * z0
            + (one_minus_abar_prev - sigma2).clamp(min=0).sqrt() * eps
        )
        z_prev = y_prev + process.offset_prev(e, k, z)
        if noise is None:
            return z_prev
        return z_prev + sigma2.sqrt() * noise

    return _sampling_loop(
        model, process, shape, modalities, update, prior=prior, generator=generator,
        start_step=start_step, z_start=z_start, progress=progress, dtype=dtype,
    )


def sdedit(
    model: Callable,
    process: MTProcess,
    x_guide: Tensor,
    strength: float,
    generator: torch.Generator,
    *,
    modalities: list[Modality] | None = None,
    prior: str = "paper",
    **kwargs,
) -> tuple[Tensor, dict[str, Tensor]]:
    """SDEdit (Meng et al. 2022): noise ``x_guide`` to step ``k0`` and denoise from there.

    ``k0 = round(strength * K) - 1`` (strength 1 = start from the last step). The guide is
    perturbed with eq. 4 without modality terms (``sqrt(abar) x + sqrt(1 - abar) noise``);
    with ``prior="shifted"`` the modality offset ``sum_i atil_{k0} e_i`` is added, as for the
    shifted prior. The rest is `algorithm1` (extra keyword arguments go to it).
    """
    modalities = list(modalities or [])
    K = process.num_steps
    k0 = round(strength * K) - 1
    if not 0 <= k0 < K:
        raise UserError(
            f"SDEdit strength {strength} gives start step {k0} of {K}; use a strength in [{1 / K:.3g}, 1]"
        )
    _check_prior(prior)
    dtype = kwargs.get("dtype", torch.float32)
    x_guide = x_guide.to(device=generator.device, dtype=dtype)
    noise = torch.randn(x_guide.shape, generator=generator, device=generator.device, dtype=dtype)
    no_modalities = [torch.zeros_like(x_guide)] * process.n_modalities
    z_start = process.q_sample(x_guide, no_modalities, k0, noise)
    if prior == "shifted":
        x = _initial_data(modalities)
        with torch.no_grad():
            z_start = z_start + process.offset([m.encode(x[m.name]) for m in modalities], k0, z_start)
    return algorithm1(
        model, process, x_guide.shape, modalities, prior=prior, generator=generator,
        start_step=k0, z_start=z_start, **kwargs,
    )


# ---------------------------------------------------------------------- the shared loop
@torch.no_grad()
def _sampling_loop(
    model: Callable,
    process: MTProcess,
    shape: Sequence[int],
    modalities: list[Modality],
    update: _Update,
    *,
    prior: str,
    generator: torch.Generator,
    start_step: int | None,
    z_start: Tensor | None,
    progress: bool,
    dtype: torch.dtype,
) -> tuple[Tensor, dict[str, Tensor]]:
    _check_prior(prior)
    K = process.num_steps
    start = K - 1 if start_step is None else int(start_step)
    if not 0 <= start < K:
        raise UserError(f"start step {start} is outside 0..{K - 1}")
    device = generator.device
    shape = tuple(shape)
    x = _initial_data(modalities)   # lines 2-4: known x_i, or the caller's random initial x_i

    if z_start is not None:
        z = z_start.to(device=device, dtype=dtype)
    else:
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)   # line 1: z_T ~ N(0, I)
        if prior == "shifted":
            z = z + process.offset([m.encode(x[m.name]) for m in modalities], start, z)

    for k in tqdm(range(start, -1, -1), disable=not progress, desc="sampling"):   # line 5: t = k + 1
        e = [m.encode(x[m.name]) for m in modalities]                               # line 7: e_i = E_i(x_i)
        t_model = process.timesteps[k].repeat(shape[0]).to(device)
        eps, preds, var_values = _unpack(model(z, t_model, e))                      # line 8: eps_theta, X~
        for m in modalities:                                                        # lines 9-11: update the
            if m.known is None:                                                     # x_i not given from X~
                x[m.name] = preds[m.name]
        # line 6 (drawn after the network call, so that the draws match a diffusers scheduler loop)
        noise = torch.randn(shape, generator=generator, device=device, dtype=dtype) if k > 0 else None
        z = update(z, eps, var_values, e, k, t_model, noise)                        # line 12: z_{t-1}
    return z, x                                                                     # line 14


def _initial_data(modalities: list[Modality]) -> dict[str, Tensor]:
    x = {}
    for m in modalities:
        value = m.known if m.known is not None else m.init
        if value is None:
            raise UserError(f"modality {m.name!r} has neither known data nor an initial value; give one of them")
        x[m.name] = value
    return x


def _unpack(out) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise ValueError("model must return (eps, preds) or (eps, preds, var_values)")
    eps, preds = out[0], out[1]
    return eps, preds, (out[2] if len(out) == 3 else None)


def _guidance_grad(guidance: Guidance, z: Tensor, t_model: Tensor) -> Tensor:
    # The loop runs without autograd; the guidance function differentiates a classifier.
    with torch.enable_grad():
        grad = guidance(z.detach(), t_model)
    return grad.detach().to(z.dtype)


def _check_prior(prior: str) -> None:
    if prior not in PRIORS:
        raise UserError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")
