"""Dispatch a table's jobs: skip what the store holds, run or submit the rest in order.

Nothing here knows about diffusion; job bodies know nothing about clusters. One module per
backend, selected by `cluster.name` (benchmarks/cluster/<name>.yaml):

- `local`, `debug` (`repro.dispatch.local`): in this process, directly or through
  submitit's in-process debug executor;
- `slurm` (`repro.dispatch.slurm`): the whole DAG as job arrays chained by SLURM
  dependencies, through submitit; what runs on the node: `repro.dispatch.slurm_entry`;
  the controller's tools (squeue, sinfo): `repro.dispatch.slurm_queue`.

Config checks before anything starts: `repro.dispatch.resources`. Where a job stands (the
store plus SLURM's queue) and `JobFailed` belong to the job layer: `repro.jobs.state`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from repro.dispatch.local import local_settings, run_debug, run_local
from repro.dispatch.resources import CLUSTERS, check_cluster, check_world
from repro.dispatch.slurm import submit_slurm, wait_slurm
from repro.errors import UserError
from repro.jobs.job import Job, topological
from repro.jobs.runner import deterministic_setting
from repro.jobs.store import JobStore

__all__ = ["CLUSTERS", "DispatchReport", "check_cluster", "dispatch"]


@dataclass
class DispatchReport:
    total: int
    cached: int
    ran: int = 0
    submitted: int = 0
    attached: int = 0
    arrays: int = 0
    cluster: str = "local"

    def line(self) -> str:
        head = f"jobs: {self.total} in plan, {self.cached} already done in the store"
        if self.cluster != "slurm":
            return f"{head}, {self.ran} run"
        return (f"{head}, {self.submitted} submitted to SLURM ({self.arrays} sbatch calls), "
                f"{self.attached} already queued")


def dispatch(jobs: list[Job], cluster: Mapping[str, Any], store_root: str | Path, *,
             wait: bool = True, progress: Callable[[str], None] | None = print) -> DispatchReport:
    """Run or submit every job of `jobs` (and their dependencies) that the store does not hold."""
    store = JobStore(store_root)
    order = topological(jobs)
    cached = sum(store.dir(j).done for j in order)
    todo = [j for j in order if not store.dir(j).done]
    if cluster["name"] == "local":
        workers, threads = local_settings(cluster)
        run_local(todo, store_root, workers=workers, threads=threads, progress=progress,
                  deterministic=deterministic_setting(cluster))
        return DispatchReport(total=len(order), cached=cached, ran=len(todo))
    if cluster["name"] == "debug":
        run_debug(todo, store_root, deterministic_setting(cluster))
        return DispatchReport(total=len(order), cached=cached, ran=len(todo), cluster="debug")
    if cluster["name"] == "slurm":
        check_world(todo, cluster)
        submission = submit_slurm(todo, cluster, Path(store_root).resolve())
        report = DispatchReport(total=len(order), cached=cached, submitted=len(submission.submitted),
                                attached=len(submission.attached), arrays=submission.arrays, cluster="slurm")
        if wait and todo:
            if progress:
                progress(f"{report.line()}; waiting for them (`python -m repro.status` lists them with their logs)")
            wait_slurm(todo, submission.ids, Path(store_root).resolve(), poll_s=float(cluster.get("poll_s", 5)),
                       progress=progress)
        return report
    raise UserError(f"cluster {cluster['name']!r} is not available here: choose one of {', '.join(CLUSTERS)}")
