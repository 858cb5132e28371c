"""A generation job killed (SIGKILL) after some of its batches resumes after the last finished
batch, and its samples come out bit-identical to an uninterrupted run's (CPU)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from repro.config import compose
from repro.dispatch import dispatch
from repro.jobs import samples
from repro.jobs.generate import BATCH_FILE
from repro.plan import plan

REPO = Path(__file__).resolve().parents[1]
SLOW = ["sample.batch_size=2", "eval.n_images=8", "+sample.sleep_s=1.5"]   # 4 batches, 1.5 s apart


def generate_job(data_root: Path):
    cfg = compose("2", "tiny", "local", [*SLOW, f"data.root={data_root}"])
    jobs = [r.job.deps["samples"] for r in plan(cfg) if r.job.deps.get("samples") is not None]
    return cfg, next(j for j in jobs if j.kind == "generate" and set(j.deps) == {"model"})


def test_sigkill_during_sampling_then_resume_is_bit_exact(tmp_path):
    data = tmp_path / "data"
    cfg, job = generate_job(data)
    dispatch([job], cfg.cluster, tmp_path / "ref")                  # uninterrupted
    ref = samples.read(tmp_path / "ref" / job.key)

    script = ("import sys; from pathlib import Path; sys.path.insert(0, %r)\n"
              "from test_sampling_resume import generate_job; from repro.dispatch import dispatch\n"
              "cfg, job = generate_job(Path(%r)); dispatch([job], cfg.cluster, Path(%r))\n"
              % (str(REPO / "tests"), str(data), str(tmp_path / "killed")))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "killed.err", "w"))
    first = tmp_path / "killed" / job.key / BATCH_FILE.format(b=0)
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, (tmp_path / "killed.err").read_text()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the job never finished a batch"
    folder = tmp_path / "killed" / job.key
    assert not samples.exists(folder)                                # killed before the end
    kept = {p.name: p.stat().st_mtime_ns for p in first.parent.glob("*.npz")}
    assert 1 <= len(kept) < 4

    dispatch([job], cfg.cluster, tmp_path / "killed")               # resume
    got = samples.read(folder)
    assert {p.name: p.stat().st_mtime_ns for p in first.parent.glob("*.npz") if p.name in kept} == kept
    assert len(list(first.parent.glob("*.npz"))) == 4
    assert got.kind == ref.kind and set(got.arrays) == set(ref.arrays)
    for name in ref.arrays:
        assert np.array_equal(got[name], ref[name]), name
