"""The training harness (repro/jobs/harness.py): EMA warm-up by hand, bit-exact resume of a toy
problem and of a classifier job (Figure 6) stopped mid-run, settings from a spec block."""
from __future__ import annotations

import json
import signal

import pytest
import torch
from torch import nn

import repro.jobs.harness as harness
from repro.config import compose
from repro.figure import figure6_jobs
from repro.jobs.harness import CHECKPOINT, TrainSettings, ema_update, fit
from repro.jobs.job import topological
from repro.jobs.runner import Preempted, run_job
from repro.jobs.store import JobDir, JobStore


def stop_after(n: int):
    """A stand-in for stop_requested(): SIGTERM from the n-th poll on (one poll per step)."""
    calls = []

    def poll() -> int | None:
        calls.append(1)
        return signal.SIGTERM if len(calls) >= n else None
    return poll


def test_ema_warm_up_by_hand():
    ema, model = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        ema.weight.fill_(1.0)
        model.weight.fill_(3.0)
    ema_update(ema, model, rate=0.99, step=0)     # decay min(0.99, 1/10) = 0.1: 0.1 * 1 + 0.9 * 3
    assert ema.weight.item() == pytest.approx(2.8)
    ema_update(ema, model, rate=0.5, step=90)     # decay min(0.5, 91/100) = 0.5: 0.5 * 2.8 + 0.5 * 3
    assert ema.weight.item() == pytest.approx(2.9)


def toy(settings: TrainSettings):
    """Least squares with dropout on random batches of a fixed data set: every draw of a step
    (batch, noise, dropout mask) goes through the harness's seeding."""
    data_g = torch.Generator().manual_seed(0)
    x, w = torch.randn(64, 4, generator=data_g), torch.randn(4, 1, generator=data_g)
    y = x @ w
    torch.manual_seed(settings.seed)
    net = nn.Sequential(nn.Dropout(0.2), nn.Linear(4, 1))

    def step(g, take):
        idx = torch.randint(len(x), (settings.batch_size,), generator=g)
        xb, yb = take(x[idx]), take(y[idx] + 0.01 * torch.randn(settings.batch_size, 1, generator=g))
        loss = ((net(xb) - yb) ** 2).mean()
        return loss, {"abs": (net(xb) - yb).abs().mean()}
    return net, step


def test_toy_run_stopped_and_resumed_is_bit_exact(tmp_path, monkeypatch):
    s = TrainSettings(steps=9, batch_size=8, lr=0.05, ema_rate=0.9, log_every=2, checkpoint_every=4,
                      snapshot_every=3, seed=5)
    whole_dir, cut_dir = JobDir(tmp_path, "whole"), JobDir(tmp_path, "cut")
    whole_dir.path.mkdir()
    cut_dir.path.mkdir()
    net, step = toy(s)
    model_a, ema_a, state_a = fit(net, step, s, whole_dir)
    assert [c["step"] for c in state_a.curve] == [0, 2, 4, 6, 8] and set(state_a.curve[0]) == {"step", "loss", "abs"}
    assert sorted(p.name for p in (whole_dir.path / "snapshots").iterdir()) == ["ema_0000003.pt", "ema_0000006.pt"]

    net, step = toy(s)
    with monkeypatch.context() as patch, pytest.raises(Preempted) as stop:
        patch.setattr(harness, "stop_requested", stop_after(6))
        fit(net, step, s, cut_dir)
    assert stop.value.step == 6
    assert torch.load(cut_dir / CHECKPOINT, weights_only=True)["step"] == 6
    torch.manual_seed(12345)   # whatever the process did in between: the checkpoint restores the RNG
    net, step = toy(s)
    model_b, ema_b, state_b = fit(net, step, s, cut_dir)
    assert state_b.curve == state_a.curve and state_b.step == 9
    for a, b in ((model_a, model_b), (ema_a, ema_b)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    # The EMA is not the model (it lags it), and without ema_rate there is none.
    assert not torch.equal(ema_a[1].weight, model_a[1].weight)
    net, step = toy(s)
    assert fit(net, step, TrainSettings(steps=2, batch_size=8, ema_rate=None), JobDir(tmp_path, "x"))[1] is None


def test_settings_from_a_spec_block():
    s = TrainSettings.from_config({"steps": 6, "lr": 1e-3, "ema_rate": 0.9, "snapshot_every": None,
                                   "eval_images": 16}, seed=3, stream=7)
    assert (s.steps, s.lr, s.ema_rate, s.seed, s.stream) == (6, 1e-3, 0.9, 3, 7)
    assert s.snapshot_every == TrainSettings().snapshot_every == 0   # null: the default
    assert harness.step_seed(s, 10) == 3 * 1_000_003 + 10 + 7


def test_classifier_job_stopped_and_resumed_is_bit_exact(tmp_path, monkeypatch):
    """Figure 6's ADM curve: a classifier finetuning stopped by SIGTERM after step 3 resumes
    there and ends with the weights and accuracy curve of an uninterrupted run."""
    cfg = compose("2", "tiny", "local", [f"data.root={tmp_path / 'data'}", "figure6.finetune.steps=6",
                                         "figure6.finetune.eval_every=2"])
    job = figure6_jobs(cfg)["ADM classifier"]
    for dep in topological([job])[:-1]:
        run_job(dep, tmp_path / "whole")
        run_job(dep, tmp_path / "cut")
    run_job(job, tmp_path / "whole")
    with monkeypatch.context() as patch, pytest.raises(Preempted):
        patch.setattr(harness, "stop_requested", stop_after(3))
        run_job(job, tmp_path / "cut")
    cut = JobStore(tmp_path / "cut").dir(job)
    assert json.loads((cut / "status.json").read_text())["step"] == 3 and not cut.done
    run_job(job, tmp_path / "cut")
    assert "resuming from step 3" in (cut / "log.txt").read_text()
    whole = JobStore(tmp_path / "whole").dir(job)
    a, b = (torch.load(d / "classifier.pt", weights_only=True) for d in (whole, cut))
    assert a["recipe"] == b["recipe"] and all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    curve = json.loads((whole / "accuracy_curve.json").read_text())
    assert [c["step"] for c in curve] == [0, 2, 4, 6]
    assert json.loads((cut / "accuracy_curve.json").read_text()) == curve
