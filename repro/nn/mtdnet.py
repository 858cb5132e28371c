"""MTDNet, the Multi-Task Denoising Diffusion Network of DiffusionMTL (Ye & Xu, CVPR 2024).

design/diffusionmtl.md sections 2.3-2.5. Per task tau, the preliminary map x_0 (Feature
Diffusion: the feature F_init^tau, C channels; Prediction Diffusion: the prediction
P_init^tau, C_tau channels) is noised to the top step and denoised in S reverse steps
(S = 2) by the denoiser, each step predicting x_0 and moving by the DDPM posterior
q(x_{k-1} | x_0_hat, x_k) of `repro.diffusion.MTProcess` (no modalities: plain DDPM):

    x = sqrt(abar_{S-1}) x_0 + sqrt(1 - abar_{S-1}) eps
    for k = S-1 .. 0:  x0_hat = Denoise_tau(x, F_cond, k);  x ~ q(. | x0_hat, x, k)  (x = x0_hat at k = 0)

The chain is differentiated end to end; there is no diffusion objective (the task losses
train it). The schedule is LDM's "linear": beta = linspace(sqrt(1e-3), sqrt(1e-2), S)^2.

Denoise_tau (attention blocks, timestep embedding and condition shared; input conv and
output stack per task):

    h  = Conv3x3_tau(x_k) + temb(k)                    kept as a skip
    q  = tokens(down x0.25 (F_cond)),  kv = tokens(down x0.25 (h))
    4 x [ kv += MLP_kv(LN_a kv);  q += CrossAttn(LN_1 q, LN_b kv);  q += MLP(LN_2 q) ]
    y  = up x4 (untokens q) + h;   return Stack_tau(y)  (1x1, then 3 x (3x3 + ReLU))

F_cond (Multi-Task Conditioning) = Conv3x3(concat of all tasks' *detached* preliminary
predictions): the queries and the output stream come from the condition, the noisy map is
only keys/values (the released "CACondReplaceTranspose").

Prediction Diffusion is not released. Ours noises P_init^tau (C_tau channels, as logits),
with input conv C_tau -> C and the head applied at every step (x0_hat lives in prediction
space), and gives each task its own 3x3 C -> C conv on F_cond, applied once per task. That
conv is *inferred* from the paper's costs (Table 2): without it this variant has 121.3M
parameters and 580 GMACs at 512 x 512; with it 133.1M / 628.3, the paper's 133M / 628G.
The same reading fits the w/o-Multi-Task-Conditioning row (ours 112.7M / 557.9 GMACs,
paper 125M / 558G: the paper's count seems to include these convs unused).

Ablations (paper Table 2): `diffusion=False` runs the identical network as iterative
refinement (no noise, x = x0_hat after each step); `conditioning=False` drops F_cond: the
blocks become self-attention blocks over the noisy tokens without MLP_kv.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.diffusion.process import MTProcess
from repro.nn.blocks import timestep_embedding

VARIANTS = ("feature", "prediction")


def ldm_linear_betas(S: int, beta_start: float = 1e-3, beta_end: float = 1e-2) -> np.ndarray:
    """LDM's "linear" schedule: betas evenly spaced in sqrt, float64 [S] (S = 2: [1e-3, 1e-2])."""
    return np.linspace(beta_start**0.5, beta_end**0.5, S, dtype=np.float64) ** 2


def mtdnet_process(S: int = 2) -> MTProcess:
    """The S-step DDPM process of MTDNet: MT-Diffusion's process with no modalities."""
    return MTProcess(ldm_linear_betas(S), np.zeros((0, S)))


def reverse_chain(x0: Tensor, denoise: Callable[[Tensor, Tensor], Tensor], process: MTProcess,
                  diffusion: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Section 2.4: noise `x0` to the top step, then S denoiser calls; returns the last x0_hat.

    `denoise(x_k, k)` returns x0_hat with `k` a long tensor [B]. Without `diffusion` no noise is
    drawn and each step's x0_hat is the next input (iterative refinement, same network).
    """
    S = process.num_steps

    def noise_like(x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    x = process.q_sample(x0, [], S - 1, noise_like(x0)) if diffusion else x0
    for k in reversed(range(S)):
        x0_hat = denoise(x, torch.full((len(x),), k, dtype=torch.long, device=x.device))
        if k == 0 or not diffusion:
            x = x0_hat
        else:
            mean, var = process.posterior_mean_var(x0_hat, x, [], k)
            x = mean + var.sqrt() * noise_like(x)
    return x


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__(nn.Linear(dim, int(dim * ratio)), nn.GELU(), nn.Linear(int(dim * ratio), dim))


class Attention(nn.Module):
    """Multi-head attention, no qkv bias (timm's default); queries and keys/values from separate streams."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        B, N, D = x.shape

        def split(t: Tensor) -> Tensor:
            return t.reshape(B, -1, self.heads, D // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(context)), split(self.v(context)))
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class CrossBlock(nn.Module):
    """One shared block (pre-LN). Conditioned: the condition tokens query the noisy tokens,
    which are refined by their own MLP first. Unconditioned: a plain self-attention block."""

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 4.0, conditioned: bool = True):
        super().__init__()
        self.conditioned = conditioned
        if conditioned:
            self.norm_a, self.mlp_kv, self.norm_b = nn.LayerNorm(dim), Mlp(dim, mlp_ratio), nn.LayerNorm(dim)
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)

    def forward(self, q: Tensor, kv: Tensor) -> tuple[Tensor, Tensor]:
        if self.conditioned:
            kv = kv + self.mlp_kv(self.norm_a(kv))
            q = q + self.attn(self.norm1(q), self.norm_b(kv))
        else:
            q = kv = kv + self.attn(self.norm1(kv), self.norm1(kv))
        q = q + self.mlp(self.norm2(q))
        return q, (kv if self.conditioned else q)


class MTDNet(nn.Module):
    """The denoiser of every task plus the reverse process (module docstring).

    Args:
        task_channels: C_tau per task (the order is the conditioning's concatenation order).
        width: C, the feature width (512 in the paper).
        variant: "feature" (noise F_init; the released model) or "prediction" (noise P_init).
        S: number of diffusion steps (2). diffusion / conditioning: the ablation switches.
        depth, heads, mlp_ratio, token_scale, temb_dim: the released model's 4, 4, 4, 0.25, 256.
    """

    def __init__(self, task_channels: Mapping[str, int], width: int = 512, variant: str = "feature", S: int = 2,
                 diffusion: bool = True, conditioning: bool = True, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4.0, token_scale: float = 0.25, temb_dim: int = 256):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"MTDNet variant must be one of {VARIANTS}, got {variant!r}")
        self.task_channels, self.variant, C = dict(task_channels), variant, width
        self.diffusion, self.conditioning, self.token_scale, self.temb_dim = diffusion, conditioning, token_scale, temb_dim
        with torch.device("cpu"):  # schedule constants stay on the CPU even when the net is built on meta
            self.process = mtdnet_process(S)
        c_in = {t: (C if variant == "feature" else n) for t, n in self.task_channels.items()}
        self.input_convs = nn.ModuleDict({t: nn.Conv2d(c_in[t], C, 3, padding=1) for t in self.task_channels})
        self.stacks = nn.ModuleDict({t: nn.Sequential(
            nn.Conv2d(C, C, 1), *[m for _ in range(3) for m in (nn.Conv2d(C, C, 3, padding=1), nn.ReLU())])
            for t in self.task_channels})
        self.heads = nn.ModuleDict({t: nn.Conv2d(C, n, 1) for t, n in self.task_channels.items()})
        self.temb = nn.Sequential(nn.Linear(temb_dim, C), nn.SiLU(), nn.Linear(C, C))
        self.blocks = nn.ModuleList([CrossBlock(C, heads, mlp_ratio, conditioning) for _ in range(depth)])
        if conditioning:
            self.cond = nn.Conv2d(sum(self.task_channels.values()), C, 3, padding=1)
            if variant == "prediction":  # inferred (module docstring)
                self.task_cond = nn.ModuleDict({t: nn.Conv2d(C, C, 3, padding=1) for t in self.task_channels})
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.temb:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
        if self.conditioning:
            nn.init.kaiming_normal_(self.cond.weight, mode="fan_out", nonlinearity="relu")

    def condition(self, p_init: Mapping[str, Tensor]) -> Tensor | None:
        """F_cond from every task's preliminary prediction, detached (no gradient to P_init through it)."""
        if not self.conditioning:
            return None
        return self.cond(torch.cat([p_init[t].detach() for t in self.task_channels], dim=1))

    def denoise(self, task: str, x: Tensor, cond: Tensor | None, k: Tensor) -> Tensor:
        """x0_hat of `task` from x_k: in feature space (feature) or prediction space (prediction)."""
        temb = self.temb(timestep_embedding(k, self.temb_dim).to(x.dtype))
        h = self.input_convs[task](x) + temb[:, :, None, None]
        # x0.25 as the release (64 -> 16 tokens a side); at least one token on tiny maps
        grid = tuple(max(1, int(n * self.token_scale)) for n in h.shape[-2:])
        kv = _tokens(F.interpolate(h, size=grid, mode="bilinear", align_corners=False))
        q = kv if cond is None else _tokens(F.interpolate(cond, size=grid, mode="bilinear", align_corners=False))
        for block in self.blocks:
            q, kv = block(q, kv)
        y = F.interpolate(q.transpose(1, 2).reshape(len(x), -1, *grid), size=h.shape[-2:],
                          mode="bilinear", align_corners=False) + h
        out = self.stacks[task](y)
        return self.heads[task](out) if self.variant == "prediction" else out

    def forward(self, f_init: Mapping[str, Tensor], p_init: Mapping[str, Tensor],
                rows: Mapping[str, Tensor] | None = None, generator: torch.Generator | None = None
                ) -> dict[str, Tensor]:
        """Denoised predictions (logits at H/8) per task, for the batch rows in `rows[task]`.

        `rows` (training: the samples labelled for each task) defaults to every row of every
        task (inference). A task with no rows is skipped: its branch gets no gradient.
        """
        cond = self.condition(p_init)
        out = {}
        for task in self.task_channels:
            idx = None if rows is None else rows[task]
            if idx is not None and len(idx) == 0:
                continue
            x0 = (f_init if self.variant == "feature" else p_init)[task]
            c = cond
            if idx is not None:
                x0, c = x0[idx], (None if cond is None else cond[idx])
            if c is not None and self.variant == "prediction":
                c = self.task_cond[task](c)
            final = reverse_chain(x0, lambda x, k: self.denoise(task, x, c, k), self.process, self.diffusion, generator)
            out[task] = self.heads[task](final) if self.variant == "feature" else final
        return out


def _tokens(x: Tensor) -> Tensor:
    return x.flatten(2).transpose(1, 2)
