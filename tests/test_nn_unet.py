"""ADM U-Net: released-checkpoint layouts, forward behaviour, building blocks against oracles."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding

from repro.errors import UserError
from repro.nn import AttentionBlock, ResBlock, pad_input_conv, timestep_embedding, unet_from_flags
from repro.nn.blocks import GroupNorm32

from helpers import load_layout, randomize_, tiny_unet

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def layout_of(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


# --- released checkpoint layouts -------------------------------------------------------

@pytest.mark.parametrize("name", ["64x64_diffusion", "128x128_diffusion"])
def test_layout_matches_released_checkpoint(name):
    layout = load_layout(name)
    with torch.device("meta"):
        model = unet_from_flags(layout["flags"])
    expected = [(k, tuple(s)) for k, s in layout["state_dict"]]
    assert layout_of(model) == expected  # names, shapes and order
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == layout["num_parameters"] == sum(math.prod(s) for _, s in expected)


def test_paper_unconditional_imagenet64_parameter_count():
    flags = {**load_layout("64x64_diffusion")["flags"], "class_cond": False, "learn_sigma": False}
    with torch.device("meta"):
        model = unet_from_flags(flags)
    assert sum(p.numel() for p in model.parameters()) == 295_131_267
    assert model.out_channels == 3 and not hasattr(model, "label_emb")


@pytest.mark.parametrize("name", ["64x64_diffusion", "128x128_diffusion"])
def test_released_state_dict_loads_strict(name):
    layout = load_layout(name)
    # One real (broadcast, so memory-free) value per tensor: i for the i-th entry, so a
    # tensor that lands under the wrong name is caught below.
    state = {k: torch.full((), float(i)).expand(s) for i, (k, s) in enumerate(layout["state_dict"])}
    with torch.device("meta"):
        model = unet_from_flags(layout["flags"])
    model.load_state_dict(state, strict=True, assign=True)
    loaded = model.state_dict()
    for i, (k, _) in enumerate(layout["state_dict"]):
        assert not loaded[k].is_meta
        assert loaded[k].reshape(-1)[0].item() == i

    # Controls: the same check rejects a missing key and a wrong shape.
    with torch.device("meta"):
        other = unet_from_flags(layout["flags"])
    missing = dict(state)
    missing.pop("middle_block.1.qkv.weight")
    with pytest.raises(RuntimeError):
        other.load_state_dict(missing, strict=True, assign=True)
    wrong = dict(state)
    wrong["out.2.weight"] = torch.zeros(3, 1, 1, 1).expand(3, wrong["out.2.weight"].shape[1], 3, 3)
    with pytest.raises(RuntimeError):
        other.load_state_dict(wrong, strict=True, assign=True)


def test_flag_defaults_and_errors():
    with torch.device("meta"):
        m32 = unet_from_flags({"image_size": 32, "num_channels": 64, "attention_resolutions": "16,8"})
        m16 = unet_from_flags({"image_size": 16, "num_channels": 64, "attention_resolutions": "8",
                               "learn_sigma": "True", "class_cond": "False"})
        mx = unet_from_flags({"image_size": 16, "num_channels": 64, "channel_mult": "1,2"},
                             extra_in_channels=5, num_classes=7)
    # Default channel_mult (1,2,2,2) at 32: three downsamplings -> middle 4x4 at 128 channels.
    assert m32.middle_channels == 128 and len(m32.input_blocks) == 1 + 4 * 2 + 3
    assert m16.middle_channels == 128 and len(m16.input_blocks) == 1 + 3 * 2 + 2
    assert m16.out_channels == 6 and m16.num_classes is None
    assert mx.input_blocks[0][0].weight.shape[1] == 3 + 5 and mx.label_emb.num_embeddings == 7
    with pytest.raises(UserError):
        unet_from_flags({"image_size": 48})  # no default channel_mult
    with pytest.raises(UserError):
        unet_from_flags({"image_size": 32, "attention_resolutions": "32,16,9"})
    with pytest.raises(UserError):
        unet_from_flags({"image_size": 32, "use_fp16": "maybe"})
    with pytest.raises(UserError):
        unet_from_flags({"image_size": 32}, not_an_argument=1)


# --- forward of a tiny configuration -------------------------------------------------------

def test_forward_shapes_taps_and_zero_output_at_init():
    model = tiny_unet(out_channels=6, num_classes=10, extra_in_channels=2)
    x, cond = torch.randn(2, 3, 8, 8), torch.randn(2, 2, 8, 8)
    t, y = torch.tensor([3, 900]), torch.tensor([1, 7])
    out, taps = model(x, t, y=y, cond=cond, return_features=True)
    assert out.shape == (2, 6, 8, 8)
    assert taps["middle"].shape == (2, 64, 2, 2) and taps["final"].shape == (2, 32, 8, 8)
    assert torch.equal(out, torch.zeros_like(out))  # zero output conv, as ADM
    assert torch.equal(model.out(taps["final"]), out)  # "final" is the input of the output block
    # Control: the output is zero only because of the zero conv.
    torch.nn.init.normal_(model.out[2].weight)
    assert model(x, t, y=y, cond=cond).abs().max() > 0


def test_inputs_change_the_output():
    model = randomize_(tiny_unet(num_classes=10, extra_in_channels=2)).eval()
    x, cond = torch.randn(2, 3, 8, 8), torch.randn(2, 2, 8, 8)
    t, y = torch.tensor([3, 900]), torch.tensor([1, 7])
    base = model(x, t, y=y, cond=cond)
    assert torch.equal(base, model(x, t, y=y, cond=cond))  # deterministic in eval
    assert not torch.allclose(base, model(x, t, y=y.flip(0), cond=cond))
    assert not torch.allclose(base, model(x, t + 50, y=y, cond=cond))
    assert not torch.allclose(base, model(x, t, y=y, cond=torch.randn_like(cond)))
    # Pre-concatenated input is the same as passing cond.
    assert torch.allclose(base, model(torch.cat([x, cond], 1), t, y=y))
    with pytest.raises(ValueError):
        model(x, t, y=y)  # cond missing
    with pytest.raises(ValueError):
        model(x, t, cond=cond)  # labels missing for a class-conditional model


def test_batch_elements_are_independent():
    model = randomize_(tiny_unet(resblock_updown=False)).eval()
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([1, 10, 100])
    joint = model(x, t)
    single = torch.cat([model(x[i : i + 1], t[i : i + 1]) for i in range(3)])
    assert torch.allclose(joint, single, atol=1e-5)


def test_cross_attention_context():
    plain = tiny_unet()
    cross = tiny_unet(encoder_channels=12)
    n_attn = sum(isinstance(m, AttentionBlock) for m in cross.modules())
    extra = sum(p.numel() for p in cross.parameters()) - sum(p.numel() for p in plain.parameters())
    c_attn = [m.channels for m in cross.modules() if isinstance(m, AttentionBlock)]
    # ds 2 and 4: one block each on the way down, the middle, two each on the way up.
    assert n_attn == 1 + 1 + 1 + 2 + 2 and extra == sum(12 * 2 * c + 2 * c for c in c_attn)
    assert not any("encoder_kv" in k for k in plain.state_dict())

    randomize_(cross).eval()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 50])
    ctx = torch.randn(2, 4, 12)
    out = cross(x, t, context=ctx)
    assert out.shape == (2, 3, 8, 8)
    assert not torch.allclose(out, cross(x, t, context=torch.randn(2, 4, 12)))
    assert not torch.allclose(out, cross(x, t))  # context=None: self-attention only
    assert cross(x, t, context=ctx[:, 0]).shape == out.shape  # (B, D): one token
    with pytest.raises(ValueError):
        plain(x, t, context=ctx)


def test_gradient_checkpointing_is_transparent():
    torch.manual_seed(1)
    a = randomize_(tiny_unet(dropout=0.0))
    b = randomize_(tiny_unet(dropout=0.0, use_checkpoint=True))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 50])
    a(x, t).square().sum().backward()
    b(x, t).square().sum().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-5), n


def test_fp16_trunk_close_to_fp32():
    ref = randomize_(tiny_unet()).eval()
    half = randomize_(tiny_unet(use_fp16=True)).eval()
    half.convert_to_fp16()
    assert half.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert half.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32  # norms stay fp32
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 50])
    out = half(x, t)
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref(x, t), atol=2e-2, rtol=2e-2)


def test_pad_input_conv_turns_a_released_model_into_an_x_model():
    base = randomize_(tiny_unet()).eval()
    x_model = tiny_unet(extra_in_channels=4).eval()
    x_model.load_state_dict(pad_input_conv(base.state_dict(), 4), strict=True)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 50])
    assert torch.allclose(x_model(x, t, cond=torch.randn(2, 4, 8, 8)), base(x, t), atol=1e-6)


# --- building blocks against independent oracles ------------------------------------------

def test_timestep_embedding_matches_diffusers():
    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    for dim in (32, 33):
        ours = timestep_embedding(t, dim)
        ref = get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        assert ours.shape == (4, dim)
        assert torch.allclose(ours, ref, atol=1e-5)


def test_groupnorm32_computes_in_float32():
    torch.manual_seed(0)
    norm = GroupNorm32(4, 8)
    x = (torch.randn(2, 8, 5, 5) * 300 + 1000).half()
    out = norm(x)
    assert out.dtype == torch.float16
    ref = F.group_norm(x.float(), 4, norm.weight, norm.bias, norm.eps).half()
    assert torch.equal(out, ref)


@pytest.mark.parametrize("mode", ["down", "up"])
def test_resblock_updown_is_resampling_at_init(mode):
    torch.manual_seed(0)
    block = ResBlock(16, 8, 0.0, use_scale_shift_norm=True, up=mode == "up", down=mode == "down")
    x, emb = torch.randn(2, 16, 8, 8), torch.randn(2, 8)
    # Zero-initialised residual branch: only the parameter-free skip path remains.
    ref = F.avg_pool2d(x, 2) if mode == "down" else F.interpolate(x, scale_factor=2, mode="nearest")
    assert torch.allclose(block(x, emb), ref)


def test_resblock_scale_shift_norm_against_formula():
    torch.manual_seed(0)
    block = randomize_(ResBlock(8, 6, 0.0, out_channels=16, use_scale_shift_norm=True), seed=3)
    x, emb = torch.randn(2, 8, 6, 6), torch.randn(2, 6)
    conv1, lin, conv2, skip = block.in_layers[2], block.emb_layers[1], block.out_layers[3], block.skip_connection
    gn1, gn2 = block.in_layers[0], block.out_layers[0]
    h = F.conv2d(F.silu(F.group_norm(x, 8, gn1.weight, gn1.bias)), conv1.weight, conv1.bias, padding=1)
    scale, shift = (F.silu(emb) @ lin.weight.T + lin.bias).chunk(2, dim=1)
    h = F.group_norm(h, 16, gn2.weight, gn2.bias) * (1 + scale[..., None, None]) + shift[..., None, None]
    h = F.conv2d(F.silu(h), conv2.weight, conv2.bias, padding=1)
    ref = F.conv2d(x, skip.weight, skip.bias) + h
    assert torch.allclose(block(x, emb), ref, atol=1e-5)


def attention_oracle(block: AttentionBlock, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention via torch's scaled_dot_product_attention, heads taken from the
    fused projection in the new (q | k | v) layout; context keys/values laid out per head."""
    b, c, hh, ww = x.shape
    heads, d = block.num_heads, c // block.num_heads
    tokens = x.reshape(b, c, -1)
    normed = F.group_norm(tokens, block.norm.num_groups, block.norm.weight, block.norm.bias)
    qkv = torch.einsum("oc,bct->bot", block.qkv.weight[..., 0], normed) + block.qkv.bias[:, None]
    q, k, v = (u.reshape(b, heads, d, -1).transpose(2, 3) for u in qkv.chunk(3, dim=1))
    if context is not None:
        kv = torch.einsum("oc,blc->bol", block.encoder_kv.weight[..., 0], context) + block.encoder_kv.bias[:, None]
        kv = kv.reshape(b, heads, 2 * d, -1)
        k = torch.cat([kv[:, :, :d].transpose(2, 3), k], dim=2)
        v = torch.cat([kv[:, :, d:].transpose(2, 3), v], dim=2)
    a = F.scaled_dot_product_attention(q, k, v)  # (b, heads, T, d)
    a = a.transpose(2, 3).reshape(b, c, -1)
    out = torch.einsum("oc,bct->bot", block.proj_out.weight[..., 0], a) + block.proj_out.bias[:, None]
    return (tokens + out).reshape(b, c, hh, ww)


def legacy_to_new_rows(c: int, heads: int) -> torch.Tensor:
    """Row permutation taking a legacy fused qkv ([q_h, k_h, v_h] per head) to q | k | v."""
    d = c // heads
    return torch.tensor([h * 3 * d + part * d + i for part in range(3) for h in range(heads) for i in range(d)])


@pytest.mark.parametrize("new_order", [True, False])
def test_attention_block_against_sdpa(new_order):
    torch.manual_seed(0)
    block = randomize_(AttentionBlock(32, num_head_channels=8, use_new_attention_order=new_order), seed=5, scale=0.3)
    x = torch.randn(2, 32, 4, 4)
    ours = block(x)
    if not new_order:  # express the legacy weights in the oracle's q | k | v layout
        perm = legacy_to_new_rows(32, block.num_heads)
        with torch.no_grad():
            block.qkv.weight.copy_(block.qkv.weight[perm])
            block.qkv.bias.copy_(block.qkv.bias[perm])
    assert torch.allclose(ours, attention_oracle(block, x), atol=1e-5)


def test_attention_heads_count_from_num_heads_or_head_channels():
    assert AttentionBlock(64, num_heads=4).num_heads == 4
    assert AttentionBlock(64, num_heads=4, num_head_channels=32).num_heads == 2
    with pytest.raises(ValueError):
        AttentionBlock(48, num_head_channels=32)


def test_cross_attention_block_against_sdpa():
    torch.manual_seed(0)
    block = AttentionBlock(32, num_heads=4, use_new_attention_order=True, encoder_channels=10)
    randomize_(block, seed=7, scale=0.3)
    x, ctx = torch.randn(2, 32, 4, 4), torch.randn(2, 3, 10)
    assert torch.allclose(block(x, ctx), attention_oracle(block, x, ctx), atol=1e-5)
