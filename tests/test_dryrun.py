"""`python -m repro.table N --dry-run`: prices a table, lists missing inputs, writes nothing."""
from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch

from repro.bench.measure import count_flops
from repro.bench.networks import build, job_config, random_batch
from repro.config import compose
from repro.dryrun import FlopCounter, dry_run, estimate
from repro.jobs.store import JobStore
from repro.plan import plan
from repro.table import cli, validate


def _run(tmp_path: Path, capsys, *args: str) -> tuple[int, str]:
    rc = cli([*args, "--dry-run", "--store", str(tmp_path / "jobs"), "--out", str(tmp_path / "tables")])
    return rc, capsys.readouterr().out


def _written(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*")]


def test_tiny_profile_prints_every_job_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out = _run(tmp_path, capsys, "3", "--profile", "tiny")
    assert rc == 0
    assert _written(tmp_path) == []                       # no job folder, no tables, no data
    cfg = compose("3", "tiny")
    with_keys = {r.job.key[:8] for r in plan(cfg)}
    assert with_keys <= set(re.findall(r"\b([0-9a-f]{8})\b", out))   # every row's evaluate job is listed
    assert out.count("store: none") == len(re.findall(r"^(train|generate|evaluate|classifier|features|released) ",
                                                       out, re.M))
    assert "missing inputs: none" in out
    assert re.search(r"^total: .* GPU-hours", out, re.M)


def test_store_state_partial_for_a_started_job(tmp_path):
    cfg = compose("3", "tiny")
    job = plan(cfg)[0].job.deps["samples"].deps["model"]
    JobStore(tmp_path / "jobs").prepare(job)                   # a folder without a result: started, not done
    lines = dry_run("3", "tiny", "local", (), tmp_path / "jobs", validate)
    i = next(i for i, line in enumerate(lines) if line.split()[1:2] == [job.name])
    assert "store: partial" in lines[i + 1]


def test_paper_profile_lists_missing_data_and_exits_0(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))      # no cached weights either
    rc, out = _run(tmp_path, capsys, "1", "--profile", "paper", "data.root=/nonexistent/imagenet")
    assert rc == 0
    assert _written(tmp_path) == []
    missing = out.split("missing inputs")[1]
    assert "/nonexistent/imagenet" in missing
    assert "8 GPU" in out                                  # paper training asks for a node of 8 GPUs (slurm.yaml)


def test_a_bad_setting_is_still_an_error(tmp_path, capsys):
    rc = cli(["1", "eval.n_images=0", "--dry-run", "--store", str(tmp_path / "jobs")])
    assert rc == 2 and _written(tmp_path) == []


def test_meta_flops_equal_a_real_run_and_scale_to_the_job():
    """The meta-device count (no data) against a second count on real CPU tensors at batch
    3, through the bench's own train-step path (eq. 6 loss, backward): the network dominates."""
    cfg = compose("3", "tiny")
    config = job_config(cfg, "mt_x")
    train_flops, fwd, params = FlopCounter().network(config)
    built = build(config)
    assert params == sum(p.numel() for p in built.model.parameters())
    z0, x, extra = random_batch(config, built.task, 3, torch.Generator().manual_seed(0))
    e = [encode(x[n]) for n, encode in built.encoders.items()]
    net = functools.partial(built.model, **extra) if extra else built.model
    real_fwd = count_flops(lambda: net(z0, torch.zeros(3), e))
    assert real_fwd == pytest.approx(3 * fwd, rel=1e-6)
    from repro.bench.networks import train_step
    real_train = count_flops(train_step(config, built, batch=3))
    assert real_train == pytest.approx(3 * train_flops, rel=0.05)
    job = next(j for j in _jobs(cfg) if j.kind == "train" and j.name == "train/mt_x")
    gpu = {"type": "X", "utilisation": 0.5, "peak_tflops": {"X": {"fp32": 2.0}}}
    est = estimate(job, FlopCounter(), gpu)
    steps, batch = job.config["train"]["steps"], job.config["train"]["batch_size"]
    assert est.flops == pytest.approx(train_flops * steps * batch)
    assert est.gpu_hours == pytest.approx(est.flops / (2.0e12 * 0.5) / 3600)


def _jobs(cfg):
    from repro.jobs.job import topological

    return topological([r.job for r in plan(cfg)])


@pytest.mark.parametrize("table", ["4", "night2day"])
def test_missing_autoencoder_is_listed_not_fatal(table, tmp_path, capsys, monkeypatch):
    """The paper profile diffuses Table 4 / night2day in kl-f8 latents: without the autoencoder
    file the dry run still prices every job (random kl-f8 weights stand in for the FLOP count)
    and lists the file among the missing inputs."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    absent = tmp_path / "no" / "kl-f8.ckpt"
    rc, out = _run(tmp_path, capsys, table, "--profile", "paper", f"task.autoencoder={absent}")
    assert rc == 0, out
    assert _written(tmp_path) == []
    assert str(absent) in out.split("missing inputs")[1]
    lines = out.splitlines()
    train = [lines[i + 1] for i, line in enumerate(lines) if line.startswith("train ")]
    assert train and all("compute 0 EFLOP" not in line for line in train)   # the latent U-Nets' FLOPs were counted


def test_readings_study_dry_run_lists_its_jobs_and_runs_nothing(tmp_path, capsys, monkeypatch):
    """`repro.table readings --dry-run` used to ignore --dry-run and run the whole study."""
    from repro.readings import plan_readings

    monkeypatch.chdir(tmp_path)
    rc, out = _run(tmp_path, capsys, "readings", "--profile", "tiny")
    assert rc == 0
    assert _written(tmp_path) == []
    study = plan_readings("tiny", "local", ())
    keys = {job.key[:8] for *_, job in study.planned}
    assert keys <= set(re.findall(r"\b([0-9a-f]{8})\b", out))   # every cell's evaluate job is listed
    assert out.startswith("dry run: the readings study, profile tiny,") and "missing inputs: none" in out
