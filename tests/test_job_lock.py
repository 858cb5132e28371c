"""One copy of work: the per-job lock (repro/jobs/lock.py) and run_job under concurrency.

Three processes running the same tiny job chain on one store compute each job once and print
identical results; a lock left by a SIGKILLed process is taken over; a lock of another host
is taken over only once its heartbeat has stopped for the stale timeout.
"""
from __future__ import annotations

import json
import re
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from repro.jobs.lock import JobLock
from repro.jobs.runner import LOCK

ROOT = Path(__file__).resolve().parents[1]


def table_process(tmp_path: Path, out: str, *extra: str) -> subprocess.Popen:
    """`python -m repro.table 1 --profile tiny` on the store tmp_path/jobs, writing to tmp_path/<out>."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["1", "--profile", "tiny", "--store", str(tmp_path / "jobs"), "--out", str(tmp_path / out),
            f"data.root={tmp_path / 'data'}", *extra]
    return subprocess.Popen([sys.executable, "-m", "repro.table", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ------------------------------------------------------------------------------ the lock itself

def test_second_holder_waits_until_the_first_releases(tmp_path):
    first = JobLock(tmp_path / "lock").acquire()
    got, waits = threading.Event(), []
    second = JobLock(tmp_path / "lock", poll_s=0.02, on_wait=waits.append)
    t = threading.Thread(target=lambda: (second.acquire(), got.set()))
    t.start()
    time.sleep(0.3)
    assert not got.is_set() and waits and waits[0]["pid"] == os.getpid()
    first.release()
    assert got.wait(5)
    second.release()
    t.join()
    assert not (tmp_path / "lock").exists()


def test_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path, capsys):
    (tmp_path / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "token": "old",
                                               "pid_ns": os.readlink("/proc/self/ns/pid")}))
    start = time.monotonic()
    with JobLock(tmp_path / "lock", stale_after_s=60) as lock:
        assert lock.holder()["token"] == lock.token
    assert time.monotonic() - start < 5
    assert "took over the stale lock" in capsys.readouterr().out


def test_lock_of_another_host_is_stale_only_when_its_heartbeat_stops(tmp_path):
    path = tmp_path / "lock"
    beating = threading.Event()
    beating.set()

    def other_host():   # a holder on another node: rewrites its heartbeat every 50 ms
        n = 0
        while beating.is_set():
            n += 1
            path.write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "token": "t", "heartbeat": n}))
            time.sleep(0.05)

    heart = threading.Thread(target=other_host)
    heart.start()
    got = threading.Event()
    waiter = JobLock(path, stale_after_s=0.5, poll_s=0.02)
    t = threading.Thread(target=lambda: (waiter.acquire(), got.set()))
    t.start()
    assert not got.wait(1.5)            # alive: three stale timeouts pass without a takeover
    beating.clear()
    heart.join()
    stopped = time.monotonic()
    assert got.wait(5)                  # its heartbeat stopped: taken over after the timeout
    assert time.monotonic() - stopped >= 0.4     # timed from the last change it saw (<= 50 ms earlier)
    waiter.release()
    t.join()


def test_heartbeat_advances_and_a_holder_notices_it_lost_the_lock(tmp_path):
    lock = JobLock(tmp_path / "lock", heartbeat_s=0.05).acquire()
    time.sleep(0.4)
    assert lock.holder()["heartbeat"] >= 2 and lock.held()
    # A takeover only happens to a lock whose heartbeats stopped (STALE_AFTER_S): slow the beat
    # down first, so the write below cannot land between a beat's token check and its rewrite
    # (that interleaving, which a loaded machine produced, is not a state a real takeover meets).
    lock.heartbeat_s = 3600.0
    time.sleep(0.2)
    (tmp_path / "lock").write_text(json.dumps({"host": "other", "pid": 1, "token": "theirs"}))
    assert not lock.held()
    lock.release()
    assert json.loads((tmp_path / "lock").read_text())["token"] == "theirs"   # not removed: not ours


# ------------------------------------------------------------------------------ run_job under concurrency

@pytest.mark.slow
def test_three_concurrent_runs_compute_each_job_once_with_identical_results(tmp_path):
    """The issue's case: three `repro.table 1` at once on one store (before: 8 of 9 jobs ran 2-3 times)."""
    procs = [table_process(tmp_path, f"tables{i}") for i in range(3)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    folders = [d for d in (tmp_path / "jobs").iterdir() if (d / "job.json").exists()]
    planned = {int(re.search(r"jobs: (\d+) in plan", out).group(1)) for out in outs}
    assert planned == {len(folders)}   # every process planned the same jobs, each has one folder
    for d in folders:
        name, key = json.loads((d / "job.json").read_text())["name"], d.name
        assert (d / "log.txt").read_text().count(f"== {name} [{key}] ==") == 1, d
        assert not (d / LOCK).exists()
    for ext in ("csv", "md", "json"):
        a, b, c = ((tmp_path / f"tables{i}" / f"table1.{ext}").read_text() for i in range(3))
        assert a == b == c
    assert any("waiting for it" in out for out in outs)


@pytest.mark.slow
def test_a_killed_runner_leaves_a_lock_that_the_next_run_takes_over(tmp_path, capsys):
    slow = ["+train.sleep_s=0.5", "cluster.workers=2"]   # jobs in worker processes (repro/dispatch/local.py)
    proc = table_process(tmp_path, "tables", *slow)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:   # wait until it is inside a training job, holding its lock
        assert proc.poll() is None, proc.communicate()[0]
        locks = [p for p in tmp_path.glob(f"jobs/*/{LOCK}")
                 if (p.parent / "job.json").exists() and '"kind": "train"' in (p.parent / "job.json").read_text()]
        if locks and '"step"' in (locks[0].parent / "status.json").read_text():
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the first run never reached training: {proc.communicate()[0]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    train_dir = locks[0].parent
    assert (train_dir / LOCK).exists()                     # left behind by the killed process
    worker = json.loads((train_dir / LOCK).read_text())["pid"]
    assert worker != proc.pid                              # the job ran in a worker of the pool ...
    for _ in range(100):                                   # ... which does not outlive the killed run
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"worker {worker} of the killed run is still running")

    from repro.table import cli

    assert cli(["1", "--profile", "tiny", "--store", str(tmp_path / "jobs"), "--out", str(tmp_path / "tables"),
                f"data.root={tmp_path / 'data'}", slow[0]]) == 0   # in this process: capsys sees the takeover
    out = capsys.readouterr().out
    assert "took over the stale lock" in out and "resuming from step 3" in (train_dir / "log.txt").read_text()
    assert not list(tmp_path.glob(f"jobs/*/{LOCK}"))


def test_lock_of_an_earlier_run_of_the_same_requeued_slurm_job_is_taken_over(tmp_path, monkeypatch):
    """After a node failure SLURM requeues the job elsewhere: no need to wait for the heartbeat timeout."""
    (tmp_path / "lock").write_text(json.dumps({"host": "dead-node", "pid": 7, "token": "old",
                                               "slurm": ["41_3", "0"]}))
    monkeypatch.setenv("SLURM_JOB_ID", "97")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    start = time.monotonic()
    with JobLock(tmp_path / "lock", stale_after_s=60):
        pass
    assert time.monotonic() - start < 5
    # another SLURM job's lock on another host is not stale while its heartbeat could still come
    (tmp_path / "lock").write_text(json.dumps({"host": "node-2", "pid": 7, "token": "x", "slurm": ["42_0", "0"]}))
    got = threading.Event()
    waiter = JobLock(tmp_path / "lock", stale_after_s=0.6, poll_s=0.02)
    t = threading.Thread(target=lambda: (waiter.acquire(), got.set()))
    t.start()
    assert not got.wait(0.3) and got.wait(5)
    waiter.release()
    t.join()
