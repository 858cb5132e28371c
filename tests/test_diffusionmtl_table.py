"""DiffusionMTL on the suite's house: the tiny profile end to end, the job bodies' pieces, the
harness's Adam + per-epoch poly schedule, the dense samples kind and the paper-profile checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repro.config import compose
from repro.errors import UserError
from repro.jobs import samples
from repro.jobs.store import JobStore
from repro.plan import DENSE_SETTINGS, dense_plan


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    """`python -m repro.table diffusionmtl --profile tiny` (one-label rows) in a scratch folder."""
    import os

    from repro.table import run_table

    root = tmp_path_factory.mktemp("dmtl")
    cwd = os.getcwd()
    os.chdir(root)   # tiny data and stores are relative to the working directory
    try:
        paths = run_table("diffusionmtl", "tiny", "local", (), root / "jobs", root / "tables")
        cfg = compose("diffusionmtl", "tiny")
        yield root, paths, cfg
    finally:
        os.chdir(cwd)


def test_tiny_profile_end_to_end(tiny_table):
    root, paths, cfg = tiny_table
    store = JobStore(root / "jobs")
    doc = json.loads(paths["json"].read_text())
    rows = {r.name: r for r in dense_plan(cfg)}
    assert set(rows) == {r.name for r in cfg.rows if r.setting == "one_label"}
    ref = store.dir(rows["Single-Task (one-label)"].job).result()["all_metrics"]
    for name, plan_row in rows.items():
        result = store.dir(plan_row.job).result()
        saved = samples.read(store.dir(plan_row.job.deps["samples"]))
        assert saved.kind == "dense" and len(saved) == cfg.eval.n_images
        variant = plan_row.job.deps["samples"].deps["model"].config["model"]["variant"]
        is_diffusion = variant not in ("single_task", "mtl_baseline")
        # before-denoising predictions exist exactly for DiffusionMTL's networks
        assert any(k.startswith("initial_") for k in saved.arrays) == is_diffusion
        assert bool(result["initial_values"]) == is_diffusion
        # the row's numbers are the table's; delta_m against Single-Task by the paper's formula
        m = result["all_metrics"]
        assert set(result["values"]) == {c.name for c in cfg.table.columns}
        if name.startswith("Single-Task"):
            assert np.isnan(result["values"]["delta_m"])
        else:
            cols = ["semseg_mIoU", "human_parts_mIoU", "saliency_maxF", "normals_mErr", "boundary_odsF"]
            if all(ref[c] != 0 for c in cols):
                sign = {"normals_mErr": -1}
                expect = 100 / 5 * sum(sign.get(c, 1) * (m[c] - ref[c]) / ref[c] for c in cols)
                assert result["values"]["delta_m"] == pytest.approx(expect)
            else:
                assert np.isnan(result["values"]["delta_m"])
        assert 0 <= m["semseg_mIoU"] <= 100 and 0 <= m["normals_mErr"] <= 180
        # per-image states behind every cell (cells.npz) and a 95% interval around each finite number
        assert (store.dir(plan_row.job) / "cells.npz").is_file()
        assert set(result["intervals"]) == set(result["values"])
        for column, ci in result["intervals"].items():
            if ci is not None:
                assert ci[0] <= result["values"][column] <= ci[1]
        assert result["intervals"]["saliency_maxF"] is not None
    assert "percentile bootstrap over the test images" in paths["md"].read_text()
    for key in ("md", "tex", "csv", "json", "metrics", "stages", "curves"):
        assert paths[key].exists(), key
    figures = sorted((root / "tables" / "figures").glob("diffusionmtl_*_denoising.png"))
    assert len(figures) == 4   # Prediction, Feature and the two ablations are denoised; baselines are not


def test_tiny_rerun_runs_nothing_and_random_labels_add_rows(tiny_table, capsys):
    root, _, cfg = tiny_table
    import os

    from repro.table import run_table

    os.chdir(root)
    run_table("diffusionmtl", "tiny", "local", (), root / "jobs", root / "tables")
    assert "0 run" in capsys.readouterr().out
    keys = {r.name: r.job.key for r in dense_plan(cfg, DENSE_SETTINGS)}
    # each setting trains its own networks on its own mapping; evaluation of the test split is shared data
    assert keys["Single-Task (one-label)"] != keys["Single-Task (random labels)"]


def test_setting_must_be_known():
    with pytest.raises(UserError, match="setting='nope'"):
        dense_plan(compose("diffusionmtl", "tiny", overrides=["setting=nope"]))


def test_dense_samples_kind_declares_its_arrays(tmp_path):
    arrays = {"images": np.zeros((2, 4, 4, 3), np.uint8), "final_semseg": np.zeros((2, 4, 4), np.uint8),
              "initial_semseg": np.ones((2, 4, 4), np.uint8)}
    samples.write(tmp_path, "dense", arrays)
    back = samples.read(tmp_path)
    assert back.kind == "dense" and np.array_equal(back["initial_semseg"], arrays["initial_semseg"])
    with pytest.raises(ValueError, match="dense samples hold"):
        samples.write(tmp_path, "dense", {**arrays, "final_nope": arrays["final_semseg"]})


def test_task_loss_logs_every_task_and_leaves_unlabelled_tasks_without_gradient():
    from repro.tasks.dense import DiffusionMTLTask

    task = DiffusionMTLTask({"semseg": 3, "sal": 2}, width=8, token_scale=1.0, loss_weights={"semseg": 1, "sal": 5})
    torch.manual_seed(0)
    model = task.build_model("feature")
    batch = {"image": torch.randn(2, 3, 64, 64), "labelled": torch.tensor([[True, False], [True, False]]),
             "semseg": torch.randint(0, 3, (2, 64, 64)), "sal": torch.randint(0, 2, (2, 64, 64))}
    loss, parts = task.loss(model, batch, torch.Generator().manual_seed(0))
    assert set(parts) == {"semseg", "sal"} and parts["sal"].item() == 0.0 and parts["semseg"].item() > 0
    loss.backward()
    assert model.trunk.predictions["sal"].weight.grad is None
    assert model.trunk.predictions["semseg"].weight.grad.abs().sum() > 0


def test_harness_adam_poly_per_epoch_and_exact_resume(tmp_path):
    """lr of epoch e is lr (1 - e/E)^0.9 (stepped every `schedule_every` steps), and a run stopped
    after a checkpoint resumes to the same weights (the scheduler's state is checkpointed)."""
    import functools

    from repro.jobs.harness import TrainSettings, fit
    from repro.nn.dense_optim import dense_optimizer, poly_schedule

    def train(out, steps, lrs):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        x = torch.randn(16, 3)

        def step(g, take):
            idx = torch.randint(16, (4,), generator=g)
            return (model(x[idx]) ** 2).mean(), {}
        s = TrainSettings(steps=steps, batch_size=4, lr=0.1, weight_decay=0.0, ema_rate=None, checkpoint_every=3,
                          log_every=1)
        opt_factory = functools.partial(dense_optimizer, lr=0.1, weight_decay=0.0)

        def recording(params):
            opt = opt_factory(params)
            opt.register_step_pre_hook(lambda o, args, kwargs: lrs.append(o.param_groups[0]["lr"]))
            return opt
        fit(model, step, s, _Dir(tmp_path / out), optimizer=recording,
            schedule=functools.partial(poly_schedule, epochs=4), schedule_every=2, clip_grad_norm=10.0)
        return model

    lrs: list[float] = []
    full = train("full", 7, lrs)
    assert lrs == pytest.approx([0.1 * (1 - (i // 2) / 4) ** 0.9 for i in range(7)])
    part_lrs: list[float] = []
    train("part", 5, part_lrs)            # checkpoints after step 3, ends at 5 ...
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["step"] == 3
    resumed = train("part", 7, part_lrs)  # ... and a longer run resumes from that checkpoint
    assert torch.equal(full.weight, resumed.weight)
    assert part_lrs[5:] == pytest.approx(lrs[3:])


class _Dir:
    """The part of repro.jobs.store.JobDir that `fit` uses: a folder, `/`, and set_status."""

    def __init__(self, path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, name):
        return self.path / name

    def set_status(self, *a, **k):
        pass


def test_paper_profile_names_the_missing_dataset_before_any_job(tmp_path, capsys):
    from repro.table import cli

    assert cli(["diffusionmtl", "--profile", "paper", "--store", str(tmp_path / "jobs"), "--out",
                str(tmp_path / "t"), "data.root=/nonexistent/PASCAL_MT"]) == 2
    assert "/nonexistent/PASCAL_MT" in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists() or not any((tmp_path / "jobs").iterdir())


def _mtpsl_folder(root, n_train=3, n_val=2):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for folder in ("image", "label", "depth", "normal"):
            (root / split / folder).mkdir(parents=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", rng.random((6, 8, 3)).astype(np.float32))
            np.save(root / split / "label" / f"{i}.npy", np.full((6, 8), i - 1, np.float32))
            np.save(root / split / "depth" / f"{i}.npy", rng.random((6, 8, 1)).astype(np.float32))
            np.save(root / split / "normal" / f"{i}.npy", rng.random((6, 8, 3)).astype(np.float32) * 2 - 1)


def test_nyud_mtpsl_layout_is_checked_and_read_by_sample_index(tmp_path):
    from repro.data.partial_labels import save_nyud_mapping
    from repro.data.registry import check_data, load_dense

    _mtpsl_folder(tmp_path / "nyu")
    flags = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]], bool)
    (tmp_path / "maps").mkdir()
    save_nyud_mapping(tmp_path / "maps" / "onelabel.pth", flags)
    data = {"name": "nyud_v2", "root": str(tmp_path / "nyu"), "mapping_dir": str(tmp_path / "maps"),
            "setting": "one_label"}
    check_data(data)
    train = load_dense(data, "train")
    assert len(train) == 3 and train[1]["labelled"].tolist() == [False, True, True]
    assert train[0]["semseg"].unique().tolist() == [255]          # MTPSL's -1 = ignore
    assert train[2]["semseg"].unique().tolist() == [1]
    assert train[0]["image"].shape == (3, 6, 8) and train[0]["normals"].shape == (3, 6, 8)
    assert len(load_dense(data, "test")) == 2
    with pytest.raises(UserError, match="randomlabels.pth not found"):
        check_data({**data, "setting": "random_labels"})
    (tmp_path / "nyu" / "val" / "depth" / "1.npy").unlink()
    with pytest.raises(UserError, match=r"val/depth/1.npy not found"):
        check_data(data)


def test_pascal_layout_check_names_the_first_missing_file(tmp_path):
    from repro.data.registry import check_data

    root = tmp_path / "PASCAL_MT"
    (root / "ImageSets" / "Context").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "ImageSets" / "Context" / f"{split}.txt").write_text("2008_000008\n")
    data = {"name": "pascal_context", "root": str(root), "mapping_dir": str(tmp_path)}
    with pytest.raises(UserError, match=r"JPEGImages/2008_000008.jpg not found"):
        check_data(data)


def test_paper_profile_builds_the_released_132_9m_model():
    """The spec's paper profile (ResNet-18, C = 512, S = 2, PASCAL's 5 tasks) is the released
    Feature-Diffusion model: 132.9M parameters (design/diffusionmtl.md), built on the meta device."""
    from repro.data.dense_folders import PASCAL_CHANNELS
    from repro.tasks.dense import DiffusionMTLTask

    t = compose("diffusionmtl", "paper").task
    task = DiffusionMTLTask(PASCAL_CHANNELS, t.backbone, t.width, t.S, t.token_scale, None, t.loss_weights)
    with torch.device("meta"):
        model = task.build_model("feature")
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 132.9


def test_nyud_spec_composes_with_the_papers_nyud_numbers():
    """`python -m repro.table diffusionmtl_nyud`: NYUD's 3 tasks and columns, the paper's NYUD numbers
    (design/paper-numbers.yaml), the embedded scenes in NYUD's layout at the CPU profiles."""
    from repro.data.registry import dense_tasks
    from repro.report.paper import table_spec

    spec = table_spec("diffusionmtl_nyud")
    assert spec.column_names == ["semseg_mIoU", "depth_absErr", "normals_mErr", "delta_m"]
    assert spec.rows["DiffusionMTL-Feature (one-label)"] == [44.47, 0.5059, 25.84, -2.27]
    assert spec.rows["MTL Baseline (random labels)"] == [45.93, 0.4839, 25.53, -3.12]
    for profile in ("tiny", "smoke"):
        cfg = compose("diffusionmtl_nyud", profile)
        assert cfg.data.name == "dense_scenes" and list(dense_tasks(cfg.data)) == ["semseg", "depth", "normals"]
        rows = dense_plan(cfg, DENSE_SETTINGS)
        assert {r.name for r in rows} <= set(spec.rows) and len(rows) == 8
    paper = compose("diffusionmtl_nyud", "paper")
    assert paper.data.name == "nyud_v2" and paper.task.imagenet.endswith("resnet18-5c106cde.pth")


def test_nyud_paper_profile_exits_2_naming_the_missing_folder_and_dry_runs_once_it_is_there(tmp_path, capsys):
    from repro.data.partial_labels import save_nyud_mapping
    from repro.table import cli

    common = ["--profile", "paper", "--store", str(tmp_path / "jobs"), "--out", str(tmp_path / "t")]
    assert cli(["diffusionmtl_nyud", *common]) == 2
    assert "/datasets/nyuv2 not found" in capsys.readouterr().err
    _mtpsl_folder(tmp_path / "nyu")
    (tmp_path / "maps").mkdir()
    data = [f"data.root={tmp_path / 'nyu'}", f"data.mapping_dir={tmp_path / 'maps'}"]
    assert cli(["diffusionmtl_nyud", *common, *data]) == 2
    assert f"{tmp_path / 'maps' / 'onelabel.pth'} not found" in capsys.readouterr().err
    for name in ("onelabel.pth", "randomlabels.pth"):
        save_nyud_mapping(tmp_path / "maps" / name, np.eye(3, dtype=bool))
    assert cli(["diffusionmtl_nyud", *common, *data, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: table diffusionmtl_nyud, profile paper" in out and "dense_train" in out
    assert "missing inputs (1;" in out and "resnet18-5c106cde.pth" in out   # only the ImageNet weights
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "t").exists()
