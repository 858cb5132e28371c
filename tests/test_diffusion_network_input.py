"""Network-input readings: `shifted` is the raw model on the zero-weight (DDPM) process,
`scaled` brings the network input to unit second moment, timesteps map back to steps."""

import pytest
import torch

from repro.diffusion import MTProcess, training_losses
from repro.diffusion.network_input import NETWORK_INPUTS, NetworkInput, SecondMoments
from repro.errors import UserError
from repro.nn import MTDiffusionModel, OutputBlockHead, UNetModel

from helpers import randomize_


def in_float64(model):
    """The U-Net computes in float32; run the process in float64 around it."""
    def call(z, t, e):
        eps, preds, _ = model(z.float(), t, [x.float() for x in e])
        return eps.double(), {k: v.double() for k, v in preds.items()}
    return call


def tiny_x_model(seed: int = 0) -> MTDiffusionModel:
    """An MT-Diffusion-X model (e concatenated on channels, masked-image head), all weights
    random: ADM zero-initialises its output convs, which would make eps_pred = 0 for any input."""
    torch.manual_seed(seed)
    backbone = UNetModel(image_size=8, in_channels=3, model_channels=16, out_channels=3, num_res_blocks=1,
                         attention_resolutions=(2,), channel_mult=(1, 2), num_head_channels=8,
                         use_scale_shift_norm=True, extra_in_channels=3)
    model = MTDiffusionModel(backbone, {"mask": (OutputBlockHead(16, 3), "final")})
    return randomize_(model, seed + 1, scale=0.2).eval()


def batch(B=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.rand(B, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    keep = (torch.rand(B, 1, 8, 8, generator=g) > 0.3).double()
    return z0, {"mask": z0 * keep}


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_shifted_input_is_the_raw_model_with_zero_weights(schedule):
    model = in_float64(tiny_x_model())
    paper = MTProcess.from_config(schedule, 1000, "paper", 1)
    zero = MTProcess.from_config(schedule, 1000, "zero", 1)
    z0, x = batch()
    enc, kinds = {"mask": lambda m: m}, {"mask": "continuous"}
    g = torch.Generator().manual_seed(11)
    steps = torch.tensor([0, 10, 500, 900, 989, 999])   # where paper's atil is largest, too
    noise = torch.randn(z0.shape, generator=g, dtype=torch.float64)

    seen = {}
    def recording(name, net):
        def call(z, t, e, **kw):
            seen[name] = z.detach().clone()
            return net(z, t, e, **kw)
        return call

    shifted = NetworkInput(recording("shifted", model), paper, "shifted")
    total_s, parts_s = training_losses(shifted, paper, z0, x, enc, kinds, steps=steps, noise=noise)
    total_z, parts_z = training_losses(recording("zero", model), zero, z0, x, enc, kinds, steps=steps, noise=noise)
    total_r, _ = training_losses(recording("raw", model), paper, z0, x, enc, kinds, steps=steps, noise=noise)

    # the same network input (y_t), hence the same eps target and loss, term by term
    torch.testing.assert_close(seen["shifted"], seen["zero"], rtol=0, atol=1e-10)
    # (the U-Net casts its float64 input to float32: inputs 1e-10 apart round to the same floats)
    torch.testing.assert_close(total_s, total_z, rtol=1e-7, atol=0)
    for name in parts_z:
        torch.testing.assert_close(parts_s[name], parts_z[name], rtol=1e-7, atol=0)
    # the raw reading on the paper process is a different network input and loss
    assert (seen["raw"] - seen["zero"]).abs().max() > 100
    assert abs(total_r.item() - total_z.item()) > 1e-3


def test_shifted_input_in_float32_is_close():
    """In float32 the shift cancels a term of size atil ~ 900: the input keeps ~1e-4 absolute error."""
    model = tiny_x_model()
    paper = MTProcess.from_config("cosine", 1000, "paper", 1)
    zero = MTProcess.from_config("cosine", 1000, "zero", 1)
    z0, x = batch()
    z0, x = z0.float(), {"mask": x["mask"].float()}
    steps, noise = torch.tensor([5, 300, 700, 900, 950, 989]), torch.randn(z0.shape, generator=torch.Generator().manual_seed(2))
    args = (z0, x, {"mask": lambda m: m}, {"mask": "continuous"})
    s, _ = training_losses(NetworkInput(model, paper, "shifted"), paper, *args, steps=steps, noise=noise)
    z, _ = training_losses(model, zero, *args, steps=steps, noise=noise)
    assert s.item() == pytest.approx(z.item(), rel=1e-3)


@pytest.mark.parametrize("weights", ["paper", "bounded", "zero"])
def test_scaled_input_has_unit_second_moment(weights):
    process = MTProcess.from_config("linear", 1000, weights, 1)
    z0, x = batch(B=4000, seed=5)
    e = [x["mask"]]
    seen = []
    net = NetworkInput(lambda z, t, e: seen.append(z) or (z, {}), process, "scaled",
                       SecondMoments.from_batch(z0, e))
    g = torch.Generator().manual_seed(0)
    for k in (0, 100, 500, 900, 999):
        z_t = process.q_sample(z0, e, k, torch.randn(z0.shape, generator=g, dtype=torch.float64))
        net(z_t, process.timesteps[[k] * len(z0)], e)
        assert seen[-1].pow(2).mean().item() == pytest.approx(1.0, abs=0.02), k
    # the raw input at a late step is far from unit scale under the paper's weights
    if weights == "paper":
        assert z_t.pow(2).mean() > 1e4


def test_default_moments_and_raw_passthrough():
    process = MTProcess.from_config("cosine", 100, "paper", 2)
    assert SecondMoments.default(2).matrix.shape == (3, 3)
    model = lambda z, t, e, y=None: (z, {"y": y})  # noqa: E731
    z = torch.randn(2, 3, 4, 4)
    e = [torch.ones_like(z), -torch.ones_like(z)]
    t = torch.tensor([3, 99])
    out, extra = NetworkInput(model, process, "raw")(z, t, e, y=torch.tensor([1, 2]))
    assert out is z and torch.equal(extra["y"], torch.tensor([1, 2]))
    scaled, _ = NetworkInput(model, process, "scaled")(z, t, e)
    assert torch.all(scaled[1].abs() < z[1].abs())       # atil is large at the last step: shrunk
    with pytest.raises(UserError):
        NetworkInput(model, process, "centred")
    with pytest.raises(UserError):
        NetworkInput(model, process, "scaled", SecondMoments.default(1))
    assert set(NETWORK_INPUTS) == {"raw", "shifted", "scaled"}


def test_respaced_timesteps_map_to_the_full_grid():
    full = MTProcess.from_config("cosine", 1000, "paper", 1)
    spaced = MTProcess.from_config("cosine", 1000, "paper", 1, respacing=25)
    z, e = torch.randn(25, 3, 2, 2, dtype=torch.float64), [torch.randn(25, 3, 2, 2, dtype=torch.float64)]
    t = spaced.timesteps
    via_full = NetworkInput(lambda z, t, e: z, full, "shifted")(z, t, e)
    via_spaced = NetworkInput(lambda z, t, e: z, spaced, "shifted")(z, t, e)
    torch.testing.assert_close(via_full, via_spaced, rtol=1e-12, atol=1e-9)
    with pytest.raises(UserError, match="grid"):
        NetworkInput(lambda z, t, e: z, spaced, "shifted")(z[:1], torch.tensor([1]), [e[0][:1]])


@pytest.mark.parametrize("reading", NETWORK_INPUTS)
def test_every_reading_drives_the_respaced_sampler(reading):
    from repro.diffusion import Modality, algorithm1

    model = tiny_x_model()
    full = MTProcess.from_config("cosine", 1000, "paper", 1)
    spaced = MTProcess.from_config("cosine", 1000, "paper", 1, respacing=10)
    masked = batch(B=2)[1]["mask"].float()
    net = NetworkInput(model, full, reading)   # built once on the training process
    z, x = algorithm1(net, spaced, masked.shape, [Modality("mask", lambda m: m, known=masked)],
                            generator=torch.Generator().manual_seed(0), clip_denoised=True)
    assert torch.isfinite(z).all() and torch.equal(x["mask"], masked)
