"""`--cluster slurm` against the real local cluster (scripts/slurm-local.sh): a whole table
through sbatch equals the local run, a re-run submits nothing, a training requeued twice
(SLURM's SIGTERM, then submitit's USR2) resumes bit-exactly, and two SLURM tasks train
data-parallel like one process.

Skipped when no cluster is up, unless REPRO_REQUIRE_SLURM=1 (CI), where that is a failure.
CPU kernels sum in an order that depends on the number of threads, so every comparison
runs its local reference with one thread, as the tiny profile's SLURM jobs do (1 CPU each).
"""
from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from repro.dispatch import dispatch
from repro.dispatch.slurm import wait_slurm
from repro.dispatch.slurm_queue import squeue_states
from repro.config import compose
from repro.jobs.runner import run_job
from repro.jobs.state import submitted_id
from repro.jobs.store import JobStore
from repro.plan import plan
from repro.status import cli as status_cli
from repro.table import cli as table_cli

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SLURM_LOCAL = REPO / "scripts" / "slurm-local.sh"
# Bounds that turn a stuck cluster into a failure instead of a hang (a tiny table takes ~1 min).
TABLE_DEADLINE_S = 300
JOB_DEADLINE_S = 120



def _cancel_what_is_left(store: Path) -> None:
    """A failing test must not leave its jobs queued for the next one."""
    ids = [json.loads(p.read_text())["job_id"] for p in store.glob("*/slurm.json")]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def _until(what: str, check, deadline_s: float = JOB_DEADLINE_S, every_s: float = 0.2):
    deadline = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {deadline_s:.0f} s for {what}")
        time.sleep(every_s)


@pytest.fixture(scope="module")
def tables(slurm_cluster, tmp_path_factory):
    """Table 1 at the tiny profile through SLURM (twice) and locally, same seed and data."""
    root = tmp_path_factory.mktemp("slurm_table")
    common = ["1", "--profile", "tiny", f"data.root={root / 'data'}"]
    slurm = [sys.executable, "-m", "repro.table", *common, "--cluster", "slurm", "cluster.poll_s=1",
             "--store", str(root / "jobs"), "--out", str(root / "tables")]
    try:
        t0 = time.monotonic()
        # The local reference runs here while the SLURM jobs wait on their dependencies.
        proc = subprocess.Popen(slurm, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert table_cli([*common, "--cluster", "local", "--store", str(root / "local_jobs"),
                              "--out", str(root / "local_tables")]) == 0
        finally:
            torch.set_num_threads(threads)
        first_out, _ = proc.communicate(timeout=TABLE_DEADLINE_S)
        first_s = time.monotonic() - t0
        assert proc.returncode == 0, first_out[-3000:]
        t1 = time.monotonic()
        second = subprocess.run(slurm, cwd=root, capture_output=True, text=True, timeout=TABLE_DEADLINE_S)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        print(f"SLURM table: {first_s:.1f} s (local reference alongside); re-run {time.monotonic() - t1:.1f} s")
        yield root, first_out, second.stdout
    finally:
        _cancel_what_is_left(root / "jobs")


def planned(out: str) -> int:
    """The number of jobs `python -m repro.table` said its plan holds ("jobs: N in plan, ...")."""
    return int(re.search(r"jobs: (\d+) in plan", out).group(1))


def test_slurm_table_equals_the_local_table(tables):
    root, first, _ = tables
    n = planned(first)   # Table 1 tiny: rows, calibration rows, learning-curve points, diagnostics
    assert n >= 9 and f"{n} in plan, 0 already done in the store, {n} submitted to SLURM" in first
    assert (root / "tables" / "table1.csv").read_text() == (root / "local_tables" / "table1.csv").read_text()
    rows = lambda p: [line for line in p.read_text().splitlines() if line.startswith("|")]   # noqa: E731
    assert rows(root / "tables" / "table1.md") == rows(root / "local_tables" / "table1.md")
    # Every job ran under SLURM, each as its own job (array tasks included), and left its logs.
    folders = [d for d in (root / "jobs").iterdir() if not d.name.startswith("_")]
    assert len(folders) == n
    for d in folders:
        status, slurm = json.loads((d / "status.json").read_text()), json.loads((d / "slurm.json").read_text())
        assert status["state"] == "done" and status["slurm_job_id"] == slurm["job_id"]
        assert Path(slurm["stdout"]).is_file()
    assert len({json.loads((d / "slurm.json").read_text())["job_id"] for d in folders}) == n


def test_rerun_of_a_finished_table_submits_zero_jobs(tables):
    root, _, second = tables
    n = planned(second)
    assert f"jobs: {n} in plan, {n} already done in the store, 0 submitted to SLURM" in second


def test_status_lists_every_job_with_its_slurm_id_and_logs(tables, capsys):
    root, first, _ = tables
    n = planned(first)
    capsys.readouterr()
    assert status_cli(["1", "--profile", "tiny", "--store", str(root / "jobs"), f"data.root={root / 'data'}"]) == 0
    out = capsys.readouterr().out
    assert f"{n} jobs in" in out and f": {n} done" in out   # the same jobs the table ran
    rows = [line.split() for line in out.splitlines() if line.split()[:1] and "/" in line.split()[0]
            and len(line.split()) >= 5 and line.split()[1] in ("features", "train", "sample", "evaluate", "diagnose")]
    # (rows whose job name has spaces, e.g. the calibration rows "ref: blur 0.5", do not split this
    # way; the "n jobs ... n done" line above counts every job)
    assert len(rows) >= 9
    for row in rows:
        assert row[2] == "done" and row[3] != "-" and Path(row[-1]).is_file()
    assert str((root / "jobs" / "_submitit").resolve()) in out


def _train_job(cfg):
    return next(r for r in plan(cfg) if r.name == "MT-Diffusion").job.deps["samples"].deps["model"]


def test_training_requeued_twice_resumes_bit_exactly(slurm_cluster, tmp_path):
    """SIGTERM (scontrol requeue: SLURM requeues) and USR2 (submitit's signal before the time
    limit: submitit requeues) each stop the training at a step boundary with a checkpoint."""
    shape = [f"data.root={tmp_path / 'data'}", "train.steps=40", "train.checkpoint_every=10"]
    # sleep_s (tests only) stretches 40 tiny steps to ~10 s, so that there is a mid-run to interrupt.
    cfg = compose("1", "tiny", "slurm", [*shape, "+train.sleep_s=0.25"])
    job = _train_job(cfg)
    store = tmp_path / "jobs"
    d = JobStore(store).dir(job)
    status = lambda: json.loads((d / "status.json").read_text()) if (d / "status.json").exists() else {}  # noqa: E731
    try:
        assert dispatch([job], cfg.cluster, store, wait=False).submitted == 1
        sid = submitted_id(d)

        def interrupt(command: list[str], after_step: int) -> int:
            _until(f"step {after_step}", lambda: status().get("state") == "running"
                   and (status().get("step") or 0) >= after_step)
            subprocess.run(command, check=True, timeout=30)
            stopped = _until("the checkpoint of the stop", lambda: status().get("state") == "preempted" and status())
            # A requeued job waits out SLURM's BeginTime (~2 min) unless told to start now.
            _until("the requeue", lambda: squeue_states().get(sid, ("",))[0] == "PENDING")
            subprocess.run(["scontrol", "update", f"JobId={sid}", "StartTime=now"], check=True, timeout=30)
            return stopped["step"]

        first = interrupt(["scontrol", "requeue", sid], after_step=10)
        _until("the resume", lambda: f"resuming from step {first}" in (d / "log.txt").read_text())
        second = interrupt(["scancel", "--signal=USR2", sid], after_step=first + 5)
        wait_slurm([job], {job.key: sid}, store, poll_s=0.5, timeout_s=JOB_DEADLINE_S, progress=None)
    finally:
        _cancel_what_is_left(store)
    assert 10 <= first < second < 40
    log = (d / "log.txt").read_text()
    assert "stopped by SIGTERM" in log and "stopped by SIGUSR2" in log
    assert f"resuming from step {first}" in log and f"resuming from step {second}" in log
    assert status()["state"] == "done" and status()["restarts"] == 2

    # The same training without interruptions (nor sleeps), here, on one thread like the job.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref_job = _train_job(compose("1", "tiny", "local", shape))
        run_job(ref_job, tmp_path / "ref")
    finally:
        torch.set_num_threads(threads)
    ref = JobStore(tmp_path / "ref").dir(ref_job)
    a, b = torch.load(ref / "model.pt", weights_only=True), torch.load(d / "model.pt", weights_only=True)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert json.loads((ref / "loss_curve.json").read_text()) == json.loads((d / "loss_curve.json").read_text())


def test_two_slurm_tasks_train_like_one_process_with_the_global_batch(slurm_cluster, tmp_path):
    shape = [f"data.root={tmp_path / 'data'}", "train.steps=8", "train.log_every=1"]
    cfg = compose("1", "tiny", "slurm", [*shape, "cluster.by_profile.tiny.train.tasks_per_node=2", "cluster.poll_s=0.5"])
    job = _train_job(cfg)
    store = tmp_path / "jobs"
    try:
        assert dispatch([job], cfg.cluster, store, wait=False).submitted == 1
        d = JobStore(store).dir(job)
        wait_slurm([job], {job.key: submitted_id(d)}, store, poll_s=0.5, timeout_s=JOB_DEADLINE_S, progress=None)
    finally:
        _cancel_what_is_left(store)
    assert d.result()["world_size"] == 2 and (d / "log.rank1.txt").exists()
    assert "global batch 8 over 2 rank(s) on cpu" in (d / "log.rank1.txt").read_text()
    run_job(job, tmp_path / "single")     # the same job (same key), one process
    single = JobStore(tmp_path / "single").dir(job)
    assert single.result()["world_size"] == 1
    two = json.loads((d / "loss_curve.json").read_text())
    one = json.loads((single / "loss_curve.json").read_text())
    assert [c["step"] for c in two] == [c["step"] for c in one] == list(range(8))
    for a, b in zip(one, two):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
