"""Multi-head attention of the ADM U-Net and classifier (Dhariwal & Nichol 2021).

Self-attention over the pixels of a feature map, with an optional cross-attention
context (GLIDE-style: extra keys/values projected from a context sequence, used by
MT-Diffusion's "U-Net as encoder" through cross-attention, Section 2.2.3 / Figure 3),
and the attention pooling that ends ADM's noisy classifier.

Two head layouts of the fused qkv projection exist in the released checkpoints:
legacy (per head [q_h, k_h, v_h], the 128x128 model) and new (all q, then all k, then
all v, the 64x64 model with use_new_attention_order=True). They compute the same
function up to a permutation of the projection rows.

Two kernels compute the attention itself: ADM's einsum formulation (the default, what the
released models were trained with) and torch's fused `scaled_dot_product_attention`
(`use_sdpa=True`), which on a GPU runs flash / memory-efficient kernels that never hold
the (T x S) weight matrix; at 64x64 with attention at 32x32 that matrix is 1024x1024 per
head and sample, the largest activation of the network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.nn.blocks import ContextBlock, maybe_checkpoint, normalization, zero_module


def split_qkv(qkv: Tensor, num_heads: int, legacy: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(B, 3*H*C, T) fused projection -> q, k, v, each (B*H, C, T)."""
    bs, width, length = qkv.shape
    ch = width // (3 * num_heads)
    if legacy:
        return qkv.reshape(bs * num_heads, 3 * ch, length).split(ch, dim=1)
    q, k, v = qkv.chunk(3, dim=1)
    return tuple(u.reshape(bs * num_heads, ch, length) for u in (q, k, v))


def attend(q: Tensor, k: Tensor, v: Tensor, use_sdpa: bool = False) -> Tensor:
    """softmax(q^T k / sqrt(C)) applied to v; q (N, C, T), k and v (N, C, S) -> (N, C, T).

    einsum path (ADM's): the 1/sqrt(C) is split as C^(-1/4) on q and on k so that the
    logits stay in fp16 range, and the softmax runs in float32. sdpa path: torch's fused
    kernel on the (N, T, C) layout it expects; its kernels keep the softmax statistics in
    float32 themselves.
    """
    if use_sdpa:
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    scale = q.shape[1] ** -0.25
    logits = torch.einsum("nct,ncs->nts", q * scale, k * scale)
    weights = torch.softmax(logits.float(), dim=-1).type(logits.dtype)
    return torch.einsum("nts,ncs->nct", weights, v)


class AttentionBlock(ContextBlock):
    """x + proj_out(MHA(GN(x))) over the H*W positions of x.

    `num_head_channels` (if not -1) fixes the width per head, otherwise `num_heads` fixes
    the number of heads. With `encoder_channels` set, a context sequence (B, L, D) is
    projected to extra keys and values that every query can also attend to; when it is
    None the block has exactly the parameters of the released checkpoints. `use_sdpa`
    selects the attention kernel (see `attend`); parameters do not depend on it.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
        encoder_channels: int | None = None,
        use_sdpa: bool = False,
    ):
        super().__init__()
        self.use_sdpa = use_sdpa
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {self.num_heads}")
        self.channels = channels
        self.use_checkpoint = use_checkpoint
        self.legacy_order = not use_new_attention_order
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        if encoder_channels is not None:
            self.encoder_kv = nn.Conv1d(encoder_channels, 2 * channels, 1)
        else:
            self.encoder_kv = None
        # Zero projection: the block is the identity at init (as every ADM residual branch).
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if context is not None and self.encoder_kv is None:
            raise ValueError("a context was given but the block has no cross-attention (encoder_channels=None)")
        return maybe_checkpoint(self._forward, self.use_checkpoint, x, context)

    def _forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        q, k, v = split_qkv(self.qkv(self.norm(x)), self.num_heads, self.legacy_order)
        if context is not None:
            if context.dim() == 2:  # one context vector per sample
                context = context[:, None, :]
            # Context keys/values per head, laid out [k_h, v_h] like the legacy qkv.
            kv = self.encoder_kv(context.transpose(1, 2).to(x.dtype))
            ek, ev = kv.reshape(b * self.num_heads, 2 * (c // self.num_heads), -1).chunk(2, dim=1)
            k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)
        h = attend(q, k, v, self.use_sdpa).reshape(b, c, -1)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class AttentionPool2d(nn.Module):
    """CLIP-style attention pooling (ADM classifier, pool="attention").

    The mean of the feature map is prepended as an extra token, learned positional
    embeddings are added, and the output is that token after one multi-head attention
    over all tokens, projected to `output_dim` (the class logits).
    """

    def __init__(self, spacial_dim: int, embed_dim: int, num_head_channels: int, output_dim: int | None = None,
                 use_sdpa: bool = False):
        super().__init__()
        self.use_sdpa = use_sdpa
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spacial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim or embed_dim, 1)
        self.num_heads = embed_dim // num_head_channels

    def forward(self, x: Tensor) -> Tensor:
        b, c, *_ = x.shape
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        q, k, v = split_qkv(self.qkv_proj(x), self.num_heads, legacy=False)
        h = attend(q, k, v, self.use_sdpa).reshape(b, c, -1)
        return self.c_proj(h)[:, :, 0]
