"""The task interface: registry, no state kept by build_model, encoders of the model given,
no file I/O below the job layer, and Algorithm 1's variants against independent loops."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from repro.diffusion import MTProcess, Modality, algorithm1, restore_masked, sample_known_z
from repro.errors import UserError
from repro.tasks import TASKS, Task, make_task
from repro.tasks.generation import SingleTaskGeneration

from helpers import TINY_HEAD, TINY_UNET

REPRO = Path(__file__).resolve().parents[1] / "repro"
DATA = {"name": "embedded", "root": "unused", "resolution": 16, "n_train": 8, "n_test": 8, "seed": 0}
CONFIGS = {
    "masked_image": {"task": {"name": "masked_image", "train_patches": [0, 10], "patch_fraction": 0.25}},
    "image_label": {"task": {"name": "image_label", "head": TINY_HEAD}},
    "translation": {"task": {"name": "translation", "source": "photo", "target": "labels"}},
    "representation": {"task": {"name": "representation", "rep_dim": 8, "hidden": 16}},
}


def config(name: str, variant: str) -> dict:
    return {**CONFIGS[name], "data": DATA, "model": {"variant": variant}}


def test_every_experiment_is_a_registered_task():
    assert set(TASKS) == set(CONFIGS)
    for name, cls in TASKS.items():
        assert issubclass(cls, Task) and cls.name == name and cls.variants
        assert isinstance(make_task(config(name, cls.variants[0])), cls)
    with pytest.raises(UserError, match="unknown task 'nope': choose one of masked_image, image_label"):
        make_task({"task": {"name": "nope"}})


@pytest.mark.parametrize("name", list(CONFIGS))
def test_build_model_keeps_no_state_and_encoders_use_the_model_given(name):
    cls = TASKS[name]
    for variant in cls.variants:
        task = make_task(config(name, variant))
        before = {k: id(v) for k, v in vars(task).items()}
        torch.manual_seed(0)
        a = task.build_model(TINY_UNET, variant)
        torch.manual_seed(1)
        b = task.build_model(TINY_UNET, variant)
        assert {k: id(v) for k, v in vars(task).items()} == before          # nothing set or replaced
        built = {id(m) for m in [*a.modules(), *b.modules()]}
        assert not [k for k, v in vars(task).items() if id(v) in built]    # no reference to what it built
        assert len(task.encoders(a, variant)) == task.n_modalities(variant)
        for mod in task.encoders(a, variant):
            with torch.no_grad():   # randomise the zero-initialised output convs so the encoders differ
                for p in list(a.parameters()) + list(b.parameters()):
                    p.add_(torch.randn_like(p) * 0.1)
            x = (torch.arange(2) if task.kinds[mod] == "categorical" else
                 torch.randn(2, 8) if name == "representation" else torch.randn(2, 3, 16, 16))
            ea, eb = task.encoders(a, variant)[mod](x), task.encoders(b, variant)[mod](x)
            if name in ("image_label", "representation"):   # the encoder is the model's own U-Net
                assert not torch.equal(ea, eb)
            else:                                           # identity in the diffusion space
                assert torch.equal(ea, x) and torch.equal(eb, x)
    with pytest.raises(UserError, match=f"unknown {name.replace('_', '-')} variant 'zz'"):
        make_task(config(name, cls.variants[0])).build_model(TINY_UNET, "zz")


def test_single_task_generation_delegates_explicitly():
    cfg = {**config("image_label", "E"), "model": {"variant": "E", "single_task": True}}
    task = make_task(cfg)
    assert isinstance(task, SingleTaskGeneration) and isinstance(task, Task)
    assert type(task.base).name == "image_label" and task.kinds == {} and task.num_classes == 10
    assert "__getattr__" not in vars(SingleTaskGeneration)
    model = task.build_model(TINY_UNET, "E")
    assert list(task.encoders(model, "E")) == ["label"] and task.n_modalities("E") == 1
    assert torch.equal(task.network_inputs("E", torch.tensor([3]))["y"], torch.tensor([10]))   # the null class


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


WRITERS = ("atomic_save_npz", "atomic_write_bytes", "atomic_save_torch", "savez", "savefig", "write_text", "write_bytes")


@pytest.mark.parametrize("package", ["tasks", "diffusion"])
def test_tasks_and_diffusion_write_no_files_and_import_no_jobs(package):
    for path in sorted((REPRO / package).glob("*.py")):
        imports = _imports(path)
        assert not any(m == "repro.io" or m.startswith("repro.jobs") or m.startswith("repro.report")
                       for m in imports), f"{path.name} imports {sorted(imports)}"
        calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                 for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)}
        assert not calls & set(WRITERS), f"{path.name} calls {calls & set(WRITERS)}"


def test_no_duck_typing_of_tasks():
    for rel in ("jobs/train.py", "jobs/generate.py", "tasks/generation.py"):
        tree = ast.parse((REPRO / rel).read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "hasattr"], rel


# ---------------------------------------------------------------- Algorithm 1's variants


def test_restore_masked_is_conditional_algorithm1_composited():
    process = MTProcess.from_config("linear", 50, "paper", 1, respacing="4")
    masked = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    mask = (torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.5).float()

    def model(z, t, e):   # a fixed noise predictor that depends on the known modality
        return 0.3 * z + 0.1 * e[0], {}

    out = restore_masked(model, process, masked, mask, "m", lambda v: 2 * v, generator=torch.Generator().manual_seed(5))
    z, _ = algorithm1(model, process, masked.shape, [Modality("m", lambda v: 2 * v, known=masked)],
                      generator=torch.Generator().manual_seed(5), clip_denoised=True)
    z = z.clamp(-1, 1)
    torch.testing.assert_close(out, torch.where(mask.bool().expand_as(z), masked, z))
    plain = restore_masked(model, process, masked, mask, "m", lambda v: 2 * v,
                           generator=torch.Generator().manual_seed(5), composite_known=False)
    torch.testing.assert_close(plain, z)


def test_sample_known_z_reads_the_named_head():
    process = MTProcess.from_config("linear", 50, "paper", 1, respacing="3")
    z0 = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    out = sample_known_z(lambda z, t, e: (z, {"a": z + 5, "b": -z}), process, z0, torch.zeros_like(z0), "b",
                         torch.Generator().manual_seed(1), clip=True)
    assert out.min() >= -1 and out.max() <= 1 and out.shape == z0.shape
