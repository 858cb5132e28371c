"""Fast paths of the networks (sdpa, channels_last, checkpointing, fp16, bf16 autocast):
each computes the default path's function within float tolerance."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from repro.errors import UserError
from repro.nn import AttentionBlock, AttentionPool2d, EncoderUNetModel, UNetModel
from repro.nn.attention import attend
from repro.nn.fast_paths import set_fast_paths, to_channels_last
from repro.nn.precision import autocast

import helpers
from helpers import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def tiny_unet(**kw) -> UNetModel:
    """Attention at every level, every parameter random (the zero-initialised output convs
    included), so no branch is trivially 0."""
    return randomize_(helpers.tiny_unet(**{"attention_resolutions": (1, 2, 4), **kw}))


def tiny_classifier(**kw) -> EncoderUNetModel:
    """An 8 px attention-pool classifier, every parameter random."""
    return randomize_(helpers.tiny_classifier(**{"image_size": 8, **kw}))


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def inputs(b: int = 2):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, 8, 8, generator=g), torch.tensor([5, 500])[:b], torch.randn(b, 4, 10, generator=g)


# --- scaled_dot_product_attention ---------------------------------------------------------

def test_attend_kernels_agree_with_a_hand_written_softmax():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 8, n, generator=g) for n in (5, 7, 7))
    # Independent oracle: the definition, softmax(q^T k / sqrt(C)) v, written out.
    w = torch.exp(q.transpose(1, 2) @ k / 8 ** 0.5)
    ref = (v @ (w / w.sum(-1, keepdim=True)).transpose(1, 2))
    assert torch.allclose(attend(q, k, v), ref, atol=1e-5)
    assert torch.allclose(attend(q, k, v, use_sdpa=True), ref, atol=1e-5)


@pytest.mark.parametrize("new_order", [True, False])
@pytest.mark.parametrize("with_context", [False, True])
def test_attention_block_sdpa_equals_einsum(new_order, with_context):
    block = randomize_(AttentionBlock(32, num_head_channels=8, use_new_attention_order=new_order,
                                      encoder_channels=10 if with_context else None), seed=5, scale=0.3)
    x, ctx = torch.randn(2, 32, 4, 4), torch.randn(2, 3, 10) if with_context else None
    x.requires_grad_(True)
    ref = block(x, ctx)
    gx_ref, = torch.autograd.grad(ref.square().sum(), x)
    block.use_sdpa = True
    out = block(x, ctx)
    gx, = torch.autograd.grad(out.square().sum(), x)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(gx, gx_ref, atol=1e-4)


def test_attention_pool_sdpa_equals_einsum():
    pool = randomize_(AttentionPool2d(4, 32, 8, output_dim=6), scale=0.3)
    x = torch.randn(2, 32, 4, 4)
    ref = pool(x)
    pool.use_sdpa = True
    assert torch.allclose(pool(x), ref, atol=1e-5)


def test_unet_and_classifier_sdpa_flag_equals_einsum():
    x, t, ctx = inputs()
    ref_model, sdpa_model = tiny_unet(encoder_channels=10), tiny_unet(encoder_channels=10, use_sdpa=True)
    assert all(b.use_sdpa for b in sdpa_model.modules() if isinstance(b, AttentionBlock))
    ref_model(x, t, context=ctx).square().sum().backward()
    out = sdpa_model(x, t, context=ctx)
    out.square().sum().backward()
    assert torch.allclose(out, ref_model(x, t, context=ctx), atol=1e-5)
    ga, gb = grads(ref_model), grads(sdpa_model)
    assert ga.keys() == gb.keys()
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-4, rtol=1e-4), n
    clf = tiny_classifier()
    ref = clf(x, t)
    set_fast_paths(clf, sdpa=True)
    assert clf.out[2].use_sdpa
    assert torch.allclose(clf(x, t), ref, atol=1e-5)


# --- channels_last ---------------------------------------------------------------------

def test_channels_last_equals_contiguous():
    x, t, ctx = inputs()
    ref_model, cl_model = tiny_unet(encoder_channels=10), tiny_unet(encoder_channels=10)
    ref = ref_model(x, t, context=ctx)
    ref.square().sum().backward()
    cl_model = to_channels_last(cl_model)
    conv = cl_model.input_blocks[1][0].in_layers[2].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    xc = to_channels_last(x)
    assert xc.is_contiguous(memory_format=torch.channels_last) and torch.equal(xc, x)
    assert to_channels_last(t) is t                # no NHWC form: unchanged
    out = cl_model(xc, t, context=ctx)
    out.square().sum().backward()
    assert torch.allclose(out, ref, atol=1e-5)
    ga, gb = grads(ref_model), grads(cl_model)
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-4, rtol=1e-4), n


# --- gradient checkpointing ------------------------------------------------------------

def count_block_forwards(model: torch.nn.Module) -> list[int]:
    """Count the runs of every attention block's body (the function checkpointing recomputes)."""
    calls = [0]
    for m in model.modules():
        if isinstance(m, AttentionBlock):
            def counted(*args, _body=m._forward):
                calls[0] += 1
                return _body(*args)
            m._forward = counted
    return calls


def test_checkpointing_recomputes_and_keeps_gradients_with_context():
    x, t, ctx = inputs()
    ref_model = tiny_unet(encoder_channels=10)
    ckpt_model = set_fast_paths(tiny_unet(encoder_channels=10), checkpoint=True)
    n_attn = sum(isinstance(m, AttentionBlock) for m in ckpt_model.modules())
    calls = count_block_forwards(ckpt_model)
    ctx_a, ctx_b = ctx.clone().requires_grad_(True), ctx.clone().requires_grad_(True)
    ref_model(x, t, context=ctx_a).square().sum().backward()
    ckpt_model(x, t, context=ctx_b).square().sum().backward()
    # Every attention block ran twice: once in forward, once recomputed in backward.
    assert calls[0] == 2 * n_attn
    assert torch.allclose(ctx_a.grad, ctx_b.grad, atol=1e-5)
    ga, gb = grads(ref_model), grads(ckpt_model)
    assert ga.keys() == gb.keys()
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-5), n
    with torch.no_grad():   # no backward: nothing to recompute
        calls[0] = 0
        ckpt_model(x, t, context=ctx)
    assert calls[0] == n_attn


def test_checkpointing_classifier_gradients():
    x, t, _ = inputs()
    a, b = tiny_classifier(), tiny_classifier(use_checkpoint=True)
    a(x, t).logsumexp(-1).sum().backward()
    b(x, t).logsumexp(-1).sum().backward()
    ga, gb = grads(a), grads(b)
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-5), n


# --- ADM fp16 mode ----------------------------------------------------------------------

def test_fp16_mode_converts_trunk_convs_only_and_stays_close():
    x, t, _ = inputs()
    ref = tiny_unet(num_classes=7).eval()
    half = tiny_unet(num_classes=7, use_fp16=True)
    half.load_state_dict(ref.state_dict(), strict=True)    # fp32 weights in, then converted
    half.convert_to_fp16()
    half.eval()
    trunk = [half.input_blocks, half.middle_block, half.output_blocks]
    for part in trunk:
        for m in part.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)):
                assert m.weight.dtype == torch.float16
            if isinstance(m, (torch.nn.Linear, torch.nn.GroupNorm)):
                assert m.weight.dtype == torch.float32
    assert half.time_embed[0].weight.dtype == half.out[2].weight.dtype == torch.float32
    y = torch.tensor([1, 3])
    out, want = half(x, t, y=y), ref(x, t, y=y)
    assert out.dtype == torch.float32
    err = (out - want).abs().max() / want.abs().max()
    assert 0 < err < 1e-2      # fp16 rounding, not equality (the fp16 path really ran)

    clf = tiny_classifier()
    clf_half = tiny_classifier(use_fp16=True)
    clf_half.convert_to_fp16()
    want, out = clf(x, t), clf_half(x, t)
    assert torch.allclose(out, want, atol=1e-2 * want.abs().max().item())


# --- bf16 autocast ----------------------------------------------------------------------

def test_bf16_autocast_step_keeps_fp32_master_weights():
    x, t, _ = inputs()
    noise = torch.randn_like(x)
    ref_model, amp_model = tiny_unet(), tiny_unet()
    seen = []
    amp_model.input_blocks[1][0].in_layers[2].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with autocast("cpu", "fp32"):
        ref_loss = F.mse_loss(ref_model(x, t), noise)
    ref_loss.backward()
    opt = torch.optim.AdamW(amp_model.parameters(), lr=1e-3)
    with autocast("cpu", "bf16"):
        loss = F.mse_loss(amp_model(x, t), noise)
    loss.backward()
    opt.step()
    assert seen == [torch.bfloat16]                          # the convs ran in bf16
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref_loss.item()) < 2e-2 * ref_loss.item()
    for p in amp_model.parameters():                        # master weights and grads stay fp32
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
    ga, gb = grads(ref_model), grads(amp_model)
    cos = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in ga.values()]),
                                                torch.cat([g.flatten() for g in gb.values()]), dim=0)
    assert cos > 0.99
    # A sampler: no_grad forward under the same context (weights as ref_model's: before the step).
    with torch.no_grad(), autocast("cpu"):
        eps = tiny_unet()(x, t)
    assert eps.dtype == torch.bfloat16 and torch.allclose(eps.float(), ref_model(x, t), atol=0.05 * eps.abs().max().item())


def test_autocast_rejects_bad_arguments():
    with pytest.raises(UserError):
        autocast("cpu", "fp8")
    with pytest.raises(UserError):
        autocast("meta")
