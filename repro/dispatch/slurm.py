"""The SLURM backend: the whole DAG goes into the queue at once, through submitit.

- Jobs are grouped in waves by depth (a job's wave is one more than its deepest unfinished
  dependency) and each (wave, kind) is one SLURM job array.
- An array waits for exactly the jobs its members read from (`--dependency=afterok:`), and
  `--kill-on-invalid-dep=yes` cancels it if one of them fails.
- Every submitted job's SLURM id is written to `jobs/<key>/slurm.json`, so a re-run (after
  this driver was killed, or a job failed) attaches to jobs still in the queue and submits
  only what is neither done nor queued. Finished jobs are never resubmitted.

The driver then only waits (polling the store and squeue) to render the table; killing it
leaves the jobs running. Logs: `jobs/<key>/log.txt`, and submitit's stdout/stderr in
`jobs/_submitit/`; `python -m repro.status` lists both. What runs on the node, and how it
turns SLURM's signals into a checkpoint: `repro.dispatch.slurm_entry`.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import submitit

from repro.dispatch.resources import resources
from repro.dispatch.slurm_entry import SlurmEntry
from repro.jobs.runner import deterministic_setting
from repro.dispatch.slurm_queue import squeue_states
from repro.io import atomic_write_json
from repro.jobs.job import Job
from repro.jobs.state import ALIVE, SLURM_FILE, SUBMITIT_DIR, JobFailed, job_state, submitted_id
from repro.jobs.store import JobStore


@dataclass
class SlurmSubmission:
    ids: dict[str, str]          # job key -> SLURM job id ("123" or "123_4" for an array task)
    submitted: list[Job]
    attached: list[Job]          # already in the queue from an earlier run: not resubmitted
    arrays: int


def submit_slurm(todo: list[Job], cluster: Mapping[str, Any], store_root: Path) -> SlurmSubmission:
    """Submit `todo` (dependencies first, none done) as job arrays chained by SLURM dependencies."""
    store = JobStore(store_root)
    queue = squeue_states()
    ids: dict[str, str] = {}
    attached = []
    for job in todo:
        sid = submitted_id(store.dir(job))
        if sid is not None and queue.get(sid, ("",))[0] in ALIVE:
            ids[job.key] = sid
            attached.append(job)
    fresh = [j for j in todo if j.key not in ids]
    depth = {key: 0 for key in ids}     # jobs already queued count as the first wave
    for job in fresh:   # topological order: dependencies already have their depth
        depth[job.key] = 1 + max((depth.get(d.key, -1) for d in job.deps.values()), default=-1)
    waves: dict[tuple[int, str], list[Job]] = defaultdict(list)
    for job in fresh:
        waves[depth[job.key], job.kind].append(job)
    folder = store_root / SUBMITIT_DIR
    for (_, kind), group in sorted(waves.items()):
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                         slurm_max_num_timeout=int(cluster.get("max_requeues", 3)))
        executor.update_parameters(**executor_parameters(cluster, kind))
        after = sorted({ids[d.key] for j in group for d in j.deps.values() if d.key in ids})
        if after:
            executor.update_parameters(slurm_additional_parameters={
                **dict(cluster.get("sbatch") or {}), "dependency": "afterok:" + ":".join(after),
                "kill-on-invalid-dep": "yes"})
        for job in group:   # before sbatch: the job itself overwrites this once it starts
            out = store.prepare(job)
            atomic_write_json(out / "status.json", {"state": "submitted", "name": job.name, "submitted": time.time()})
        with executor.batch():
            handles = [executor.submit(SlurmEntry(deterministic_setting(cluster)), job, str(store_root)) for job in group]
        for job, handle in zip(group, handles):
            ids[job.key] = handle.job_id
            atomic_write_json(store.dir(job) / SLURM_FILE, {
                "job_id": handle.job_id, "submitted": time.time(), "kind": kind, "after": after,
                "submitit_folder": str(folder), "stdout": str(handle.paths.stdout), "stderr": str(handle.paths.stderr)})
    return SlurmSubmission(ids, fresh, attached, len(waves))


def executor_parameters(cluster: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """submitit AutoExecutor parameters of one job kind."""
    res = resources(cluster, kind)
    params: dict[str, Any] = {
        "name": f"repro-{kind}", "nodes": int(res["nodes"]), "tasks_per_node": int(res["tasks_per_node"]),
        "cpus_per_task": int(res["cpus_per_task"]), "timeout_min": int(res["timeout_min"]),
        "mem_gb": res["mem_gb"] * int(res["tasks_per_node"]),   # per task in the config, per node for SLURM
        "slurm_array_parallelism": int(cluster.get("array_parallelism") or 256),
    }
    if res["gpus_per_node"]:
        params["gpus_per_node"] = int(res["gpus_per_node"])
    for key in ("partition", "account", "qos", "constraint"):
        if cluster.get(key):
            params[f"slurm_{key}"] = str(cluster[key])
    if cluster.get("sbatch"):
        params["slurm_additional_parameters"] = dict(cluster["sbatch"])
    return params


def wait_slurm(jobs: list[Job], ids: Mapping[str, str], store_root: Path, *, poll_s: float = 5.0,
               lost_after_s: float = 30.0, timeout_s: float | None = None,
               progress: Callable[[str], None] | None = print) -> None:
    """Block until every job is done in the store; JobFailed as soon as one fails or is lost.

    A job is lost when SLURM no longer lists it as alive and the store holds no result for
    `lost_after_s` (a requeued job passes through COMPLETING and PENDING, never long out of sight).
    TimeoutError after `timeout_s`, if given (the jobs stay queued).
    """
    store = JobStore(store_root)
    gone_since: dict[str, float] = {}
    last = ""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        queue = squeue_states()     # before reading the store: a job leaves the queue after its result is written
        states = {}
        for job in jobs:
            st = job_state(job, store, queue)
            if st.state == "lost":
                since = gone_since.setdefault(job.key, time.monotonic())
                st.state = "failed" if time.monotonic() - since > lost_after_s else "pending"
            else:
                gone_since.pop(job.key, None)
            states[job.key] = st
        failed = [(job, states[job.key]) for job in jobs if states[job.key].state == "failed"]
        if failed:
            raise JobFailed("; ".join(f"{job.name} failed ({st.detail}); log: {st.log}" for job, st in failed)
                            + f" - `python -m repro.status` lists every job")
        counts = defaultdict(int)
        for st in states.values():
            counts[st.state] += 1
        line = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        if progress and line != last:
            progress(f"[{time.strftime('%H:%M:%S')}] {line}")
            last = line
        if counts["done"] == len(jobs):
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"jobs not done after {timeout_s:.0f} s: {line}")
        time.sleep(poll_s)
