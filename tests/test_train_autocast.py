"""`train.autocast`: bfloat16 forward passes on CPU, an option that leaves the train keys of
record alone when unset, and trains to nearly (not exactly) the float32 loss."""
from __future__ import annotations

import json

import torch

from repro.config import compose
from repro.dispatch import dispatch
from repro.jobs.store import JobStore
from repro.plan import features_job, train_job


def _train(tmp_path, *overrides: str):
    cfg = compose("1", "tiny", overrides=["train.steps=3", *overrides])
    job = train_job(cfg, "mt_x", features_job(cfg))
    dispatch([job], cfg.cluster, tmp_path / "jobs", progress=None)
    d = JobStore(tmp_path / "jobs").dir(job)
    return job, json.loads((d / "loss_curve.json").read_text()), torch.load(d / "model.pt", weights_only=True)


def test_autocast_is_an_option_with_a_small_effect(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain, curve32, w32 = _train(tmp_path)
    off, _, _ = _train(tmp_path, "+train.autocast=false")
    bf16, curve16, w16 = _train(tmp_path, "+train.autocast=true")
    assert "autocast" not in plain.config["train"]          # unset: the keys of record are unchanged
    assert off.key != plain.key and bf16.key not in (plain.key, off.key)
    l32, l16 = [c["loss"] for c in curve32], [c["loss"] for c in curve16]
    # step 0's output convolution is zero-initialised (eps = 0 in any precision); after it:
    assert l32[0] == l16[0] and l32[-1] != l16[-1]            # the forward passes did run in bfloat16 ...
    assert abs(l32[-1] - l16[-1]) < 0.05 * abs(l32[-1])       # ... to within bfloat16's few digits
    assert any(not torch.equal(w32["ema"][k], w16["ema"][k]) for k in w32["ema"])
    assert all(v.dtype == torch.float32 for v in w16["ema"].values() if v.is_floating_point())
