"""ADM noisy classifier: released-checkpoint layouts, pooling heads, forward behaviour."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from repro.errors import UserError
from repro.nn import AttentionPool2d, EncoderUNetModel, classifier_from_flags

from helpers import load_layout, randomize_, tiny_classifier

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.mark.parametrize("name", ["64x64_classifier", "128x128_classifier"])
def test_layout_matches_released_checkpoint(name):
    layout = load_layout(name)
    with torch.device("meta"):
        model = classifier_from_flags(layout["flags"])
    expected = [(k, tuple(s)) for k, s in layout["state_dict"]]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == layout["num_parameters"] == sum(math.prod(s) for _, s in expected)


def test_released_64x64_state_dict_loads_strict_on_meta():
    layout = load_layout("64x64_classifier")
    state = {k: torch.full((), float(i)).expand(s) for i, (k, s) in enumerate(layout["state_dict"])}
    with torch.device("meta"):
        model = classifier_from_flags(layout["flags"])
    model.load_state_dict(state, strict=True, assign=True)
    loaded = model.state_dict()
    assert all(loaded[k].reshape(-1)[0].item() == i for i, (k, _) in enumerate(layout["state_dict"]))
    with torch.device("meta"):
        other = classifier_from_flags({**layout["flags"], "classifier_pool": "adaptive"})
    with pytest.raises(RuntimeError):  # control: another pooling head does not fit
        other.load_state_dict(state, strict=True, assign=True)


def test_released_128x128_state_dict_loads_strict_and_runs():
    """The smaller released layout, with real random tensors in real memory."""
    layout = load_layout("128x128_classifier")
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) * 0.02 for k, s in layout["state_dict"]}
    model = classifier_from_flags(layout["flags"]).eval()
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.out[2].positional_embedding, state["out.2.positional_embedding"])
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 128, 128), torch.tensor([10]))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


@pytest.mark.parametrize("pool", ["adaptive", "attention", "spatial", "spatial_v2"])
def test_tiny_forward_every_pool(pool):
    model = randomize_(tiny_classifier(pool)).eval()
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([1, 300, 999])
    logits = model(x, t)
    assert logits.shape == (3, 5)
    assert not torch.allclose(logits, model(x, t + 100))  # the classifier is time-dependent
    single = torch.cat([model(x[i : i + 1], t[i : i + 1]) for i in range(3)])
    assert torch.allclose(logits, single, atol=1e-5)


def test_adaptive_pool_outputs_zero_at_init():
    model = tiny_classifier("adaptive")
    logits = model(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]))
    assert torch.equal(logits, torch.zeros(2, 5))


def test_attention_pool_against_sdpa():
    torch.manual_seed(0)
    pool = randomize_(AttentionPool2d(4, 32, 8, 6), seed=2, scale=0.3)
    x = torch.randn(2, 32, 4, 4)
    # Oracle: mean token + 16 pixel tokens, learned positions, 4-head attention read at token 0.
    tokens = torch.cat([x.flatten(2).mean(-1, keepdim=True), x.flatten(2)], dim=-1) + pool.positional_embedding
    qkv = torch.einsum("oc,bct->bot", pool.qkv_proj.weight[..., 0], tokens) + pool.qkv_proj.bias[:, None]
    q, k, v = (u.reshape(2, 4, 8, -1).transpose(2, 3) for u in qkv.chunk(3, dim=1))
    a = F.scaled_dot_product_attention(q, k, v)[:, :, 0].reshape(2, 32)
    ref = a @ pool.c_proj.weight[..., 0].T + pool.c_proj.bias
    assert torch.allclose(pool(x), ref, atol=1e-5)


def test_flag_errors():
    with pytest.raises(UserError):
        classifier_from_flags({"image_size": 64, "classifier_pool": "max"})
    with pytest.raises(UserError):
        classifier_from_flags({"image_size": 64}, depth=3)
    with pytest.raises(UserError):
        EncoderUNetModel(16, 3, 16, 5, 1, (2,), channel_mult=(1, 2), pool="attention")  # no head width
