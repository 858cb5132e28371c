"""Run one job body inside its folder: status, log, provenance, atomic result.

Cluster-agnostic: the same `run_job` executes in this process (`--cluster local`),
inside submitit's debug executor, or on a SLURM node.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from repro.io import atomic_write_json
from repro.jobs.job import Job
from repro.jobs.store import JobDir, JobStore

# kind -> module whose `run(cfg, out, deps) -> dict` is the job body
BODIES = {
    "features": "repro.jobs.features",
    "train": "repro.jobs.train",
    "sample": "repro.jobs.sample",
    "evaluate": "repro.jobs.evaluate",
}


def body(kind: str) -> Callable[[dict, JobDir, dict[str, JobDir]], dict[str, Any]]:
    return importlib.import_module(BODIES[kind]).run


class _Tee:
    """Copy a stream to the job's log file (progress bars included)."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, s: str) -> int:
        self.log.write(s)
        self.log.flush()
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return getattr(self.stream, "isatty", lambda: False)()

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def _logging_to(path: Path):
    with open(path, "a", buffering=1) as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


def run_job(job: Job, store_root: str | Path) -> dict[str, Any]:
    """Execute `job` unless its result exists; return its result."""
    from repro.report.provenance import git_commit

    store = JobStore(store_root)
    out = store.prepare(job)
    if out.done:
        return out.result()
    deps = {role: store.dir(dep) for role, dep in job.deps.items()}
    missing = [role for role, d in deps.items() if not d.done]
    if missing:
        raise RuntimeError(f"job {job.name} ({job.key}) started before its dependencies {missing} finished")
    started = time.time()
    out.set_status("running", started=started, name=job.name)
    with _logging_to(out / "log.txt"):
        print(f"== {job.name} [{job.key}] ==", flush=True)
        try:
            result = body(job.kind)(dict(job.config), out, deps)
        except BaseException as err:
            traceback.print_exc()
            out.set_status("failed", error=f"{type(err).__name__}: {err}", wall_time_s=time.time() - started)
            raise
    wall = time.time() - started
    result = {**result, "provenance": {"key": job.key, "name": job.name, "git_commit": git_commit(),
                                       "wall_time_s": round(wall, 2), "finished": time.time()}}
    atomic_write_json(out / "result.json", result)
    out.set_status("done", wall_time_s=round(wall, 2))
    return result
