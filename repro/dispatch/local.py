"""The in-process backends: `local` runs each job in this process, one after another
(progress bars on the terminal); `debug` goes through submitit's in-process debug executor,
which exercises the submitit path (pickling, job folders) without a cluster.
"""
from __future__ import annotations

from pathlib import Path

import submitit

from repro.jobs.job import Job
from repro.jobs.runner import run_job
from repro.jobs.state import SUBMITIT_DIR


def run_local(todo: list[Job], store_root: str | Path) -> None:
    """Run `todo` (dependencies first) in this process."""
    for job in todo:
        run_job(job, store_root)


def run_debug(todo: list[Job], store_root: str | Path) -> None:
    """Run `todo` (dependencies first) through submitit's debug executor."""
    executor = submitit.DebugExecutor(folder=str(Path(store_root) / SUBMITIT_DIR))
    for job in todo:  # dependencies first; the debug executor runs each on .result()
        executor.submit(run_job, job, str(store_root)).result()
