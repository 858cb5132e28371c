"""Sampling and evaluation jobs killed (SIGKILL, a real subprocess) after some of their batches
resume after the last finished batch, and their outputs come out bit-identical to an
uninterrupted run's (CPU): Tables 2-3's generation, Table 1's restoration sampling, Table 1's
LPIPS evaluation and Table 2's generation metrics (feature pass)."""
from __future__ import annotations

import json
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
from repro.jobs.batches import FOLDER
from repro.jobs.generate import BATCH_FILE
from repro.jobs.job import Job
from repro.plan import plan

REPO = Path(__file__).resolve().parents[1]
SLOW = ["sample.batch_size=2", "eval.n_images=8", "+sample.sleep_s=1.5"]   # 4 batches, 1.5 s apart
SMALL = ["sample.batch_size=2", "eval.n_images=8", "eval.batch_size=2"]   # 4 batches per mask count


def generate_job(data_root: Path, *overrides: str):
    cfg = compose("2", "tiny", "local", [*SLOW, *overrides, f"data.root={data_root}"])
    jobs = [r.job.deps["samples"] for r in plan(cfg) if r.job.deps.get("samples") is not None]
    return cfg, next(j for j in jobs if j.kind == "generate" and set(j.deps) == {"model"})


def table1_evaluate_job(data_root: Path, *overrides: str) -> tuple[dict, Job]:
    """Table 1's MT-Diffusion row (Algorithm 1 restorations, then LPIPS) at the tiny profile."""
    cfg = compose("1", "tiny", "local", [*SMALL, *overrides, f"data.root={data_root}"])
    return cfg, next(r.job for r in plan(cfg) if r.name == "MT-Diffusion")


def slowed(job: Job, sleep_s: float) -> Job:
    """`job` with `eval.sleep_s` set (the evaluation's test hook; the plan never sets it): another key."""
    return Job(job.kind, job.name, {**job.config, "eval": {**job.config["eval"], "sleep_s": sleep_s}}, job.deps)


def run_job_in_subprocess(builder: str, args: tuple, store: Path, err: Path) -> subprocess.Popen:
    """`dispatch([<builder>(*args)], cfg.cluster, store)` in a fresh interpreter: `builder` names a
    function of this module returning (cfg, job)."""
    script = ("import sys; from pathlib import Path; sys.path.insert(0, %r)\n"
              "import test_sampling_resume as t; from repro.dispatch import dispatch\n"
              "cfg, job = t.%s(*%r); dispatch([job], cfg.cluster, Path(%r))\n"
              % (str(REPO / "tests"), builder, args, str(store)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # its own process group: the local dispatcher runs jobs in spawned worker processes, which a
    # kill of the parent alone would leave running (the job would finish uninterrupted)
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(err, "w"), start_new_session=True)


def kill_once(proc: subprocess.Popen, marker: Path, err: Path, timeout_s: float = 900) -> None:
    """SIGKILL `proc` and every process it started (its job workers) as soon as `marker` (a
    finished batch's file) exists, as a dying node would; fail if it ends first."""
    deadline = time.time() + timeout_s
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, err.read_text()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the job never finished a batch"
    deadline = time.time() + 30
    while _group_alive(proc.pid) and time.time() < deadline:   # the workers die with it
        time.sleep(0.05)
    assert not _group_alive(proc.pid), "a worker of the killed run survived"


def _group_alive(pgid: int) -> bool:
    """Whether a running (not zombie) process of process group `pgid` is left (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}


def same_batches(a: Path, b: Path) -> int:
    """How many saved batches `a` and `b` hold, after checking that they hold the same ones, bit for bit."""
    names = sorted(mtimes(a / FOLDER))
    assert names == sorted(mtimes(b / FOLDER))
    for name in names:
        with np.load(a / FOLDER / name) as x, np.load(b / FOLDER / name) as y:
            assert x.files == y.files, name
            for k in x.files:
                assert np.array_equal(x[k], y[k]), (name, k)
    return len(names)


def test_sigkill_during_sampling_then_resume_is_bit_exact(tmp_path):
    data = tmp_path / "data"
    cfg, job = generate_job(data)
    dispatch([job], cfg.cluster, tmp_path / "ref")                  # uninterrupted
    ref = samples.read(tmp_path / "ref" / job.key)

    err = tmp_path / "killed.err"
    proc = run_job_in_subprocess("generate_job", (str(data),), tmp_path / "killed", err)
    first = tmp_path / "killed" / job.key / BATCH_FILE.format(b=0)
    kill_once(proc, first, err)
    folder = tmp_path / "killed" / job.key
    assert not samples.exists(folder)                                # killed before the end
    kept = mtimes(first.parent)
    assert 1 <= len(kept) < 4

    dispatch([job], cfg.cluster, tmp_path / "killed")               # resume
    got = samples.read(folder)
    assert {k: v for k, v in mtimes(first.parent).items() if k in kept} == kept
    assert len(list(first.parent.glob("*.npz"))) == 4
    assert got.kind == ref.kind and set(got.arrays) == set(ref.arrays)
    for name in ref.arrays:
        assert np.array_equal(got[name], ref[name]), name


def test_sigkill_during_restoration_sampling_then_resume_is_bit_exact(tmp_path):
    """Table 1's sampler draws every batch from one generator: the resumed job restores its state
    from the last saved batch, so the remaining batches draw the same noise as an uninterrupted run."""
    data, store = tmp_path / "data", tmp_path / "jobs"
    cfg, ev = table1_evaluate_job(data)
    ref_job = ev.deps["samples"]
    dispatch([ref_job], cfg.cluster, store)                          # uninterrupted (trains mt_x once)
    ref = samples.read(store / ref_job.key)

    args = (str(data), "+sample.sleep_s=0.5")                        # another key, the same numbers
    job = table1_evaluate_job(*map(Path, args[:1]), *args[1:])[1].deps["samples"]
    assert job.key != ref_job.key and job.deps["model"].key == ref_job.deps["model"].key
    err = tmp_path / "killed.err"
    proc = run_job_in_subprocess("table1_evaluate_job", args, store, err)
    folder = store / job.key
    kill_once(proc, folder / FOLDER / "restored-m5-00000.npz", err)
    assert not samples.exists(folder)
    kept = mtimes(folder / FOLDER)
    assert 1 <= len(kept) < 16                                      # 4 mask counts x 4 batches

    dispatch([job], cfg.cluster, store)                              # resume
    assert {k: v for k, v in mtimes(folder / FOLDER).items() if k in kept} == kept   # not recomputed
    assert len(mtimes(folder / FOLDER)) == 16
    # Every batch, and the generator state it leaves, equal the uninterrupted run's: the noise
    # stream continues where the killed run stopped (at the tiny profile the restorations barely
    # depend on the noise, so the images alone would not show a restarted stream).
    assert same_batches(folder, store / ref_job.key) == 16
    got = samples.read(folder)
    assert got.parts() == ref.parts()
    for m in cfg.eval.mask_counts:
        a, b = got.restorations(m), ref.restorations(m)
        assert set(a) == set(b)
        for name in b:
            assert np.array_equal(a[name], b[name]), (m, name)


def table1_slow_evaluation(data_root: str) -> tuple[dict, Job]:
    cfg, ev = table1_evaluate_job(Path(data_root))
    return cfg, slowed(ev, 0.5)


def table2_slow_evaluation(data_root: str) -> tuple[dict, Job]:
    cfg, gen = generate_job(Path(data_root), "eval.batch_size=2")    # 4 batches of the feature pass
    ev = next(r.job for r in plan(cfg) if r.job.deps.get("samples") == gen)
    return cfg, slowed(ev, 1.0)


def _assert_same_evaluation(a: Path, b: Path) -> None:
    ra, rb = (json.loads((p / "result.json").read_text()) for p in (a, b))
    ra.pop("provenance"), rb.pop("provenance")
    assert ra == rb
    with np.load(a / "cells.npz") as x, np.load(b / "cells.npz") as y:
        assert x.files == y.files
        for k in x.files:
            assert np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f"), k


def test_sigkill_during_lpips_evaluation_then_resume_is_bit_exact(tmp_path):
    data, store = tmp_path / "data", tmp_path / "jobs"
    cfg, ref = table1_evaluate_job(data)
    dispatch([ref], cfg.cluster, store)                              # uninterrupted, samples included
    job = table1_slow_evaluation(str(data))[1]
    assert job.key != ref.key and job.deps["samples"].key == ref.deps["samples"].key
    err = tmp_path / "killed.err"
    proc = run_job_in_subprocess("table1_slow_evaluation", (str(data),), store, err)
    folder = store / job.key
    kill_once(proc, folder / FOLDER / "lpips-m5-00000.npz", err)
    assert not (folder / "result.json").exists()
    kept = mtimes(folder / FOLDER)
    assert 1 <= len(kept) < 16

    dispatch([job], cfg.cluster, store)                              # resume
    assert {k: v for k, v in mtimes(folder / FOLDER).items() if k in kept} == kept
    assert same_batches(folder, store / ref.key) == 16
    _assert_same_evaluation(folder, store / ref.key)


def test_sigkill_during_generation_metrics_then_resume_is_bit_exact(tmp_path):
    """Table 2's evaluation: the feature pass over the samples resumes per batch; the metrics and
    their bootstrap replicates computed from the resumed features equal the uninterrupted ones."""
    data, store = tmp_path / "data", tmp_path / "jobs"
    cfg, gen = generate_job(data, "eval.batch_size=2")
    ref = next(r.job for r in plan(cfg) if r.job.deps.get("samples") == gen)
    dispatch([ref], cfg.cluster, store)
    job = table2_slow_evaluation(str(data))[1]
    err = tmp_path / "killed.err"
    proc = run_job_in_subprocess("table2_slow_evaluation", (str(data),), store, err)
    folder = store / job.key
    kill_once(proc, folder / FOLDER / "features-00000.npz", err)
    assert not (folder / "result.json").exists()
    kept = mtimes(folder / FOLDER)
    assert 1 <= len(kept) < 4                                       # 8 samples, batches of 2

    dispatch([job], cfg.cluster, store)
    assert {k: v for k, v in mtimes(folder / FOLDER).items() if k in kept} == kept
    assert same_batches(folder, store / ref.key) == 4
    _assert_same_evaluation(folder, store / ref.key)
