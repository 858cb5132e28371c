"""Every paper-profile network, at full size, on CPU, before a cluster runs it.

For each spec, the distinct networks its train jobs build at the paper profile (the job
configs of repro.plan, built by repro.jobs.trained.build_diffusion) run one training step (eq. 6
loss, backward, AdamW step) and one sampling call at batch 1 on random data; the networks
that stand for released guided-diffusion checkpoints, and the paper's classifiers, load
random tensors in the released layouts (tests/data/adm-checkpoints) with strict=True.
Slow: minutes on 2 cores (measured per network by `python -m repro.bench --paper-configs`).
The default run (CI: 15 minutes on 2 cores for the whole suite) builds Table 1's networks (the
ImageNet-64 U-Net, ADM and MT-Diffusion) and Table 3's (the 128x128 U-Net loading the released
checkpoint's layout); the others (Table 2's label heads, Cityscapes, representation: another
~4 CPU-minutes under load) run with REPRO_FULLSIZE_TESTS=1.
"""
from __future__ import annotations

import functools
import math
import os

import pytest
import torch

from repro.bench.networks import (
    build, job_config, sampling_call, spec_classifiers, spec_networks, train_step, with_random_autoencoder,
)
from repro.config import available_tables, compose

from helpers import load_layout

pytestmark = pytest.mark.slow

IN_DEFAULT_RUN = {"1", "3"}   # the specs whose full-size networks every run builds (see the docstring)

# weights.<key> of the paper specs -> the released checkpoint layout it names.
RELEASED = {"adm_128_diffusion": "128x128_diffusion", "adm_128_classifier": "128x128_classifier",
            "adm_64_classifier": "64x64_classifier"}


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    """Full-size networks: both cores help (unlike the tiny models of the other tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@functools.cache
def networks_by_spec() -> dict[str, list]:
    """Each distinct paper network under the first spec that uses it."""
    out: dict[str, list] = {spec: [] for spec in available_tables()}
    for net in spec_networks("paper"):
        out[net.name.split("/")[0]].append(net)
    return out


def released_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the names and shapes of released checkpoint `name`, in its order."""
    layout = load_layout(name)
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=g) * 0.02 for k, s in layout["state_dict"]}
    assert sum(math.prod(v.shape) for v in state.values()) == layout["num_parameters"]
    return state


@pytest.mark.parametrize("spec", [t for t in available_tables() if not t.startswith("diffusionmtl")])   # dense: own tests
def test_paper_networks_train_and_sample_at_full_size(spec, tmp_path_factory):
    if spec not in IN_DEFAULT_RUN and not os.environ.get("REPRO_FULLSIZE_TESTS"):
        pytest.skip(f"full-size paper networks of {spec}: outside the default run's time budget; "
                    "run them with REPRO_FULLSIZE_TESTS=1")
    nets = networks_by_spec()[spec]
    if not nets:
        pytest.skip(f"every paper network of {spec} is exercised under an earlier spec")
    for net in nets:
        config = with_random_autoencoder(net.config, tmp_path_factory.getbasetemp())
        built = build(config)
        if net.released:   # the network its import job loads the released checkpoint into
            built.model.backbone.load_state_dict(released_state(RELEASED[net.released]), strict=True)
        before = {n: p.detach().clone() for n, p in built.model.named_parameters() if p.requires_grad}
        loss = train_step(config, built, batch=1)()
        assert math.isfinite(loss), net.name
        # AdamW moves exactly the tensors with a nonzero gradient (at init the zero output
        # convs block most of the network's gradient, so that is a few tensors, never none).
        params = dict(built.model.named_parameters())
        with_grad = {n for n, p in params.items() if p.grad is not None and p.grad.abs().sum() > 0}
        moved = {n for n in before if not torch.equal(params[n], before[n])}
        assert with_grad and moved == with_grad, net.name
        del before
        eps = sampling_call(config, built, batch=1)()
        assert eps.shape[0] == 1 and eps.shape[1] == built.model.backbone.in_channels
        assert torch.isfinite(eps).all(), net.name
        del built, params, eps      # one full-size network (and its AdamW state) in memory at a time


def test_every_spec_has_paper_networks_and_released_models_are_mapped():
    by_spec = networks_by_spec()
    names = [n.name for nets in by_spec.values() for n in nets]
    assert len(names) == len(set(names)) >= 10
    for spec in ("1", "2", "3", "4", "representation"):
        assert by_spec[spec], spec
    released = {n.released for nets in by_spec.values() for n in nets if n.released}
    assert released == {"adm_128_diffusion"} and released <= RELEASED.keys()


def test_released_64x64_diffusion_is_the_paper_profile_unet():
    """The profile's U-Net block with learned variance and the new head order is the released
    64x64 model: its layout loads strictly into the network Table 2's adm_cond job builds."""
    cfg = compose("2", "paper", overrides=["+unet.learn_sigma=true", "+unet.use_new_attention_order=true"])
    with torch.device("meta"):
        model = build(job_config(cfg, "adm_cond")).model
    state = {k: torch.zeros(()).expand(s) for k, s in
             load_layout("64x64_diffusion")["state_dict"]}
    model.backbone.load_state_dict(state, strict=True, assign=True)
    # Control: Table 2's trained-from-scratch block (fixed variance) does not take it.
    with torch.device("meta"):
        plain = build(job_config(compose("2", "paper"), "adm_cond")).model
    with pytest.raises(RuntimeError):
        plain.backbone.load_state_dict(state, strict=True, assign=True)


@pytest.mark.parametrize("spec,layout", [("2", "64x64_classifier"), ("3", "128x128_classifier")])
def test_paper_classifiers_load_released_layout(spec, layout):
    from repro.tasks.image_label import build_classifier

    cfg = compose(spec, "paper")
    named = {c.get("released") for c in [*cfg.get("classifiers", {}).values(),
                                         *cfg.get("figure6", {}).get("classifiers", {}).values()]}
    assert any(RELEASED.get(k) == layout for k in named)
    (_, block, res), = spec_classifiers("paper", (spec,))
    clf = build_classifier(block, res, 1000)
    clf.load_state_dict(released_state(layout, seed=1), strict=True)
    if spec != "3":
        return
    # ADM's fp16 mode (classifier_use_fp16) on the released weights; one model suffices (CPU fp16 is slow).
    clf.eval()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 3, res, res, generator=g), torch.tensor([100])
    with torch.no_grad():
        ref = clf(x, t)
        clf.convert_to_fp16()
        half = clf(x, t)
    assert ref.shape == (1, 1000) and half.dtype == torch.float32
    err = (half - ref).abs().max() / ref.abs().max()
    assert 0 < err < 2e-2
