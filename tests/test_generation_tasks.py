"""Image-label task (Table 2's M/E), single-task finetuning, the released-checkpoint import."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from repro.diffusion import MTProcess, training_losses
from repro.diffusion.loss import IGNORE_INDEX
from repro.jobs.job import Job
from repro.jobs.runner import run_job
from repro.jobs.store import JobStore
from repro.jobs.trained import load_trained
from repro.tasks import make_task
from repro.tasks.generation import SingleTaskGeneration, generate
from repro.tasks.image_label import ImageLabelTask

from helpers import TINY_HEAD, TINY_UNET, load_layout, randomize_

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def tiny_task(variant: str, **kw) -> tuple[ImageLabelTask, torch.nn.Module]:
    torch.manual_seed(0)
    task = ImageLabelTask(16, 10, head=TINY_HEAD, variant=variant, **kw)
    return task, task.build_model(TINY_UNET, variant)


def test_label_encoder_is_the_unet_on_a_zero_image_at_t0():
    task, model = tiny_task("M")
    randomize_(model)
    y = torch.tensor([0, 3, IGNORE_INDEX, 9])
    e = task.encoders(model, "M")["label"](y)
    b = model.backbone
    expected = b(torch.zeros(4, 3, 16, 16), torch.zeros(4, dtype=torch.long), y=torch.tensor([0, 3, 0, 9]))
    torch.testing.assert_close(e[[0, 1, 3]], expected[[0, 1, 3]])
    assert torch.equal(e[2], torch.zeros_like(e[2]))          # a dropped label adds nothing
    assert not torch.equal(e[0], e[1])                        # classes are told apart
    assert not e.requires_grad                                # stop-gradient
    logits = torch.randn(4, 10)                               # head logits fed back: their argmax class
    encode = task.encoders(model, "M")["label"]
    torch.testing.assert_close(encode(logits), encode(logits.argmax(1)))


def test_stop_gradient_leaves_real_class_embeddings_untouched():
    """Only the denoising pass (null class) trains the class embedding; the encoder is frozen."""
    task, model = tiny_task("M")
    randomize_(model)
    process = MTProcess.from_config("cosine", 100, "paper", 1)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(6, 3, 16, 16) * 2 - 1, torch.arange(6)
    z0, x, net_inputs = task.batch(images, labels, g)
    assert torch.equal(net_inputs["y"], torch.full((6,), 10))
    net = lambda z, t, e: model(z, t, e, **net_inputs)  # noqa: E731
    loss, parts = training_losses(net, process, z0, x, task.encoders(model, "M"), task.kinds, 0.1, g)
    assert set(parts) == {"eps", "label"} and parts["label"] > 0
    loss.backward()
    grad = model.backbone.label_emb.weight.grad
    assert grad[:10].abs().max() == 0 and grad[10].abs().max() > 0


def test_label_dropout_drops_a_fixed_share_and_keeps_one():
    task, _ = tiny_task("E", label_dropout=0.5)
    g = torch.Generator().manual_seed(1)
    out = task.drop_labels(torch.arange(8), g)
    assert (out == IGNORE_INDEX).sum() == 4
    assert torch.equal(out[out != IGNORE_INDEX], torch.arange(8)[out != IGNORE_INDEX])
    nearly_all = ImageLabelTask(16, 10, label_dropout=0.99, variant="M")
    assert (nearly_all.drop_labels(torch.arange(8), g) != IGNORE_INDEX).sum() == 1   # cross-entropy stays defined
    all_dropped = ImageLabelTask(16, 10, label_dropout=1.0, variant="M")
    assert (all_dropped.drop_labels(torch.arange(8), g) == IGNORE_INDEX).all()


def test_single_task_generation_is_plain_ddpm_loss():
    """Finetuning on single-task generation: no modality offset, no head loss, only eq. 6's noise term."""
    task, model = tiny_task("E")
    randomize_(model)
    wrapped = SingleTaskGeneration(task)
    process = MTProcess.from_config("cosine", 100, "paper", 1)
    images, labels = torch.rand(4, 3, 16, 16) * 2 - 1, torch.arange(4)
    z0, x, net_inputs = wrapped.batch(images, labels, torch.Generator().manual_seed(0))
    assert (x["label"] == IGNORE_INDEX).all() and wrapped.kinds == {}
    net = lambda z, t, e: model(z, t, e, **net_inputs)  # noqa: E731
    loss, parts = training_losses(net, process, z0, x, wrapped.encoders(model, "E"), wrapped.kinds, 0.1,
                                  torch.Generator().manual_seed(5))
    # Oracle: DDPM's loss with the same draws (no modalities at all).
    ddpm = MTProcess.from_config("cosine", 100, "zero", 0)
    ref, _ = training_losses(net, ddpm, z0, {}, {}, {}, 0.1, torch.Generator().manual_seed(5))
    torch.testing.assert_close(loss, ref)
    assert set(parts) == {"eps"}
    masked = make_task({"task": {"name": "masked_image", "train_patches": [0, 10], "patch_fraction": 0.25},
                        "data": {"resolution": 16}, "model": {"variant": "X", "single_task": True}})
    _, xm, _ = masked.batch(images, labels, torch.Generator().manual_seed(0))
    assert torch.equal(xm["masked"], torch.zeros_like(images))                    # the complete mask


@pytest.mark.parametrize("variant, condition", [("adm_cond", "none"), ("M", "joint"), ("E", "joint"),
                                                ("E", "complete")])
def test_generation_is_seeded(variant, condition):
    task, model = tiny_task(variant)
    randomize_(model, scale=0.05)
    process = MTProcess.from_config("cosine", 100, "paper", task.n_modalities(variant), respacing=3)
    kw = dict(n=5, resolution=16, seed=3, condition=condition, progress=False)
    a, ya = generate(task, variant, model.eval(), process, batch_size=5, **kw)
    b, yb = generate(task, variant, model, process, batch_size=5, **kw)
    c, _ = generate(task, variant, model, process, batch_size=5, **{**kw, "seed": 4})
    assert torch.equal(a, b) and torch.equal(ya, yb) and a.shape == (5, 3, 16, 16)
    assert not torch.equal(a, c)
    assert ((ya >= 0) & (ya < 10)).all()               # a class per sample: drawn, or generated jointly


def layout(name: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(s)) for k, s in load_layout(name)["state_dict"]]


def test_paper_models_have_the_released_layouts():
    """E's head at 64x64 is the released 64x64 classifier; ADM* at 128x128 is 128x128_diffusion.pt."""
    head = dict(width=128, depth=4, attention_resolutions=[32, 16, 8], channel_mult=[1, 2, 3, 4], num_head_channels=64)
    unet64 = dict(model_channels=192, channel_mult=[1, 2, 3, 4], num_res_blocks=3, attention_resolutions=[32, 16, 8],
                  num_head_channels=64, dropout=0.1, use_scale_shift_norm=True, resblock_updown=True)
    unet128 = dict(model_channels=256, channel_mult=[1, 1, 2, 3, 4], num_res_blocks=2, attention_resolutions=[32, 16, 8],
                   num_heads=4, num_head_channels=-1, dropout=0.0, use_scale_shift_norm=True, resblock_updown=True,
                   learn_sigma=True)
    with torch.device("meta"):
        e_model = ImageLabelTask(64, 1000, head=head, variant="E").build_model(unet64, "E")
        adm128 = ImageLabelTask(128, 1000, variant="adm_cond").build_model(unet128, "adm_cond")
    head_layout = [(k, tuple(v.shape)) for k, v in e_model.heads["label"].state_dict().items()]
    assert head_layout == layout("64x64_classifier")
    assert [(k, tuple(v.shape)) for k, v in adm128.backbone.state_dict().items()] == layout("128x128_diffusion")
    assert e_model.backbone.label_emb.weight.shape == (1001, 768)   # + the null class of the denoising pass


def test_released_checkpoint_becomes_a_trained_model(tmp_path):
    """The released job loads a checkpoint strictly; continued training starts from exactly it."""
    cfg = {"data": {"name": "embedded", "root": str(tmp_path / "data"), "resolution": 16, "n_train": 64,
                    "n_test": 8, "seed": 1},
           "task": {"name": "image_label", "head": TINY_HEAD}, "unet": TINY_UNET, "seed": 0,
           "diffusion": {"schedule": "cosine", "T": 100, "weights": "paper", "weight_value": 1.0, "lam": 0.1},
           "model": {"variant": "adm_cond", "task": "image_label"}}
    _, model = tiny_task("adm_cond")
    released = randomize_(copy.deepcopy(model.backbone), seed=4)
    torch.save(released.state_dict(), tmp_path / "tiny_diffusion.pt")
    job = Job("released", "released/adm", {**cfg, "released": str(tmp_path / "tiny_diffusion.pt")})
    run_job(job, tmp_path / "jobs")
    _, loaded, _, _ = load_trained(JobStore(tmp_path / "jobs").dir(job))
    for (k, v), (k2, v2) in zip(loaded.backbone.state_dict().items(), released.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    train = {"steps": 0, "batch_size": 4, "lr": 1e-3, "ema_rate": 0.9, "checkpoint_every": 10, "log_every": 1}
    cont = Job("train", "train/adm_cont", {**cfg, "train": train}, {"init": job})
    run_job(cont, tmp_path / "jobs")
    _, continued, _, _ = load_trained(JobStore(tmp_path / "jobs").dir(cont))
    assert all(torch.equal(a, b) for a, b in zip(continued.state_dict().values(), loaded.state_dict().values()))
    wrong = randomize_(ImageLabelTask(16, 10, variant="M").build_model(TINY_UNET, "M").backbone)
    torch.save(wrong.state_dict(), tmp_path / "wrong.pt")   # one more class-embedding row: must not load
    from repro.errors import UserError

    with pytest.raises(UserError, match="does not fit"):
        run_job(Job("released", "released/bad", {**cfg, "released": str(tmp_path / "wrong.pt")}), tmp_path / "jobs")
    assert math.isfinite(sum(p.sum().item() for p in continued.parameters()))
