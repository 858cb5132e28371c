"""A training job stopped mid-run (a stop request, as SLURM's SIGTERM makes one) checkpoints
the step it was on and resumes there bit-exactly, without a cluster (the SLURM version of
this test is tests/test_cluster_slurm.py)."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

import repro.jobs.train as train_body
from repro.config import compose
from repro.jobs.runner import Preempted, run_job
from repro.jobs.store import JobStore
from repro.plan import plan

STEPS, STOP_AFTER = 8, 5


def train_job(data_root: Path):
    cfg = compose("1", "tiny", "local", [f"data.root={data_root}", f"train.steps={STEPS}",
                                         "train.checkpoint_every=3", "train.log_every=1"])
    return next(r for r in plan(cfg) if r.name == "MT-Diffusion").job.deps["samples"].deps["model"]


def test_stop_request_checkpoints_the_current_step_and_resumes_bit_exactly(tmp_path, monkeypatch):
    job = train_job(tmp_path / "data")
    whole = JobStore(tmp_path / "whole").dir(job)
    run_job(job, tmp_path / "whole")

    calls = []

    def sigterm_after_step_5() -> int | None:   # polled once per step, after the update
        calls.append(1)
        return signal.SIGTERM if len(calls) >= STOP_AFTER else None

    monkeypatch.setattr(train_body, "stop_requested", sigterm_after_step_5)
    with pytest.raises(Preempted) as stop:
        run_job(job, tmp_path / "cut")
    cut = JobStore(tmp_path / "cut").dir(job)
    assert stop.value.step == STOP_AFTER and stop.value.signum == signal.SIGTERM
    status = json.loads((cut / "status.json").read_text())
    assert status["state"] == "preempted" and status["step"] == STOP_AFTER
    assert not cut.done and not (cut / train_body.MODEL).exists()
    state = torch.load(cut / train_body.CHECKPOINT, weights_only=True)
    assert state["step"] == STOP_AFTER           # the step it was on, not the periodic one (3)
    assert not list(cut.path.glob(".*.tmp"))

    monkeypatch.undo()
    run_job(job, tmp_path / "cut")
    assert f"resuming from step {STOP_AFTER}" in (cut / "log.txt").read_text()
    a = torch.load(whole / train_body.MODEL, weights_only=True)
    b = torch.load(cut / train_body.MODEL, weights_only=True)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    assert json.loads((cut / "loss_curve.json").read_text()) == json.loads((whole / "loss_curve.json").read_text())



def test_snapshot_of_step_k_is_the_final_ema_of_a_k_step_run(tmp_path):
    """train.snapshot_every keeps the EMA weights the efficiency curves sample: the snapshot of
    step 4 of an 8-step run is, bit for bit, the final EMA of the same run stopped at 4 steps."""
    def job(steps: int, every):
        cfg = compose("1", "tiny", "local", [f"data.root={tmp_path / 'data'}", f"train.steps={steps}",
                                             f"train.snapshot_every={every}", "train.checkpoint_every=3"])
        return next(r for r in plan(cfg) if r.name == "SDEdit-").job.deps["samples"].deps["model"]

    long, short = job(STEPS, 4), job(4, 0)
    run_job(long, tmp_path / "jobs")
    run_job(short, tmp_path / "jobs")
    store = JobStore(tmp_path / "jobs")
    assert sorted(p.name for p in (store.dir(long).path / "snapshots").iterdir()) == ["ema_0000004.pt"]
    assert not (store.dir(short).path / "snapshots").exists()
    _, snap, _, _ = train_body.load_trained(store.dir(long), step=4)
    _, final, _, _ = train_body.load_trained(store.dir(short))
    assert all(torch.equal(a, b) for a, b in zip(snap.state_dict().values(), final.state_dict().values()))
    _, last, _, _ = train_body.load_trained(store.dir(long), step=STEPS)   # the final step is model.pt
    assert not all(torch.equal(a, b) for a, b in zip(last.state_dict().values(), final.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="no EMA snapshot of step 2"):
        train_body.load_trained(store.dir(long), step=2)
