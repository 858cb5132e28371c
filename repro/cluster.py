"""Dispatch a table's jobs: skip what the store holds, run or submit the rest in order.

Nothing here knows about diffusion; job bodies know nothing about clusters.
`local` runs jobs in this process (progress bars on the terminal); `debug` goes
through submitit's in-process debug executor.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from repro.errors import UserError
from repro.jobs.job import Job, topological
from repro.jobs.runner import run_job
from repro.jobs.store import JobStore

CLUSTERS = ("local", "debug")


@dataclass
class DispatchReport:
    total: int
    cached: int
    ran: int

    def line(self) -> str:
        return f"jobs: {self.total} in plan, {self.cached} already done in the store, {self.ran} run"


def check_cluster(cluster: Mapping[str, Any]) -> None:
    if cluster["name"] not in CLUSTERS:
        raise UserError(f"cluster {cluster['name']!r} is not available here: choose one of {', '.join(CLUSTERS)}")


def dispatch(jobs: list[Job], cluster: Mapping[str, Any], store_root: str | Path) -> DispatchReport:
    store = JobStore(store_root)
    order = topological(jobs)
    cached = sum(store.dir(j).done for j in order)
    todo = [j for j in order if not store.dir(j).done]
    if cluster["name"] == "local":
        for job in todo:
            run_job(job, store_root)
    elif cluster["name"] == "debug":
        import submitit

        executor = submitit.DebugExecutor(folder=str(Path(store_root) / "_submitit"))
        for job in todo:  # dependencies first; the debug executor runs each on .result()
            executor.submit(run_job, job, str(store_root)).result()
    return DispatchReport(total=len(order), cached=cached, ran=len(todo))
