"""Dispatch a table's jobs: skip what the store holds, run or submit the rest in order.

Nothing here knows about diffusion; job bodies know nothing about clusters.

- `local` runs jobs in this process, one after another (progress bars on the terminal).
- `debug` goes through submitit's in-process debug executor.
- `slurm` submits through submitit (benchmarks/cluster/slurm.yaml: partition, account,
  qos, constraint, extra sbatch flags, and per job kind: nodes, tasks and GPUs per node,
  CPUs and memory per task, time limit). The whole DAG goes into the queue at once:
    * jobs are grouped in waves by depth (a job's wave is one more than its deepest
      unfinished dependency) and each (wave, kind) is one SLURM job array;
    * an array waits for exactly the jobs its members read from (`--dependency=afterok:`),
      and `--kill-on-invalid-dep=yes` cancels it if one of them fails;
    * every submitted job's SLURM id is written to `jobs/<key>/slurm.json`, so a re-run
      (after this driver was killed, or a job failed) attaches to jobs still in the queue
      and submits only what is neither done nor queued. Finished jobs are never resubmitted.
  This process then only waits (polling the store and squeue) to render the table;
  killing it leaves the jobs running. Logs: `jobs/<key>/log.txt`, and submitit's
  stdout/stderr in `jobs/_submitit/`; `python -m repro.status` lists both.

Preemption and time limits on SLURM: `SlurmEntry` turns SLURM's SIGTERM (preemption,
`scontrol requeue`, scancel) and submitit's USR2 (sent 90 s before the time limit) into a
stop request that a stoppable job body (training) honours at its next step boundary: it
checkpoints, stops, and after USR2 submitit requeues it; after SIGTERM SLURM itself requeues
(or cancels) it. A requeued job resumes from its checkpoint. Job bodies that do not poll
keep submitit's handlers: on USR2 they are requeued at once and start again from scratch.
"""
from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import submitit

from repro.errors import UserError
from repro.io import atomic_write_json
from repro.jobs.job import Job, topological
from repro.jobs.runner import Preempted, request_stop, run_job, stoppable
from repro.jobs.store import JobDir, JobStore

CLUSTERS = ("local", "debug", "slurm")
SUBMITIT_DIR = "_submitit"     # inside the job store: submitit's pickles and stdout/stderr
SLURM_FILE = "slurm.json"      # inside a job's folder: its latest SLURM submission
RESOURCE_KEYS = ("nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min")
# squeue states of a job that may still produce a result (requeued jobs pass through COMPLETING).
ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
         "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED"}
SLURM_TIMEOUT_S = 15.0          # for every squeue/sinfo call
MIN_TIMEOUT_MIN = 5             # shorter limits get submitit's USR2 (90 s early, or up to 60 s more) at once


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


class JobFailed(RuntimeError):
    """A submitted job failed or left the queue without a result (the message says where its log is)."""


# --------------------------------------------------------------------------- checks

def available_clusters() -> list[str]:
    """The --cluster choices: benchmarks/cluster/<name>.yaml."""
    from repro.config import BENCHMARKS

    return sorted(p.stem for p in (BENCHMARKS / "cluster").glob("*.yaml"))


def check_cluster(cluster: Mapping[str, Any]) -> None:
    """UserError unless jobs can be dispatched to `cluster` (SLURM: reachable, partition exists)."""
    if cluster["name"] not in CLUSTERS:
        raise UserError(f"cluster {cluster['name']!r} is not available here: choose one of {', '.join(CLUSTERS)}")
    if cluster["name"] == "slurm":
        problem = slurm_problem(cluster.get("partition"))
        if problem:
            raise UserError(f"--cluster slurm: {problem}")
        for kind in ("features", "train", "sample", "evaluate"):
            resources(cluster, kind)


def slurm_problem(partition: str | None = None) -> str | None:
    """Why SLURM cannot take jobs from here, in one line, or None."""
    missing = [tool for tool in ("sbatch", "squeue", "sinfo", "scontrol") if shutil.which(tool) is None]
    if missing:
        return (f"{', '.join(missing)} not found on PATH: run on a SLURM login node "
                f"(or start the local cluster: sudo scripts/slurm-local.sh up)")
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=SLURM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"the SLURM controller did not answer sinfo within {SLURM_TIMEOUT_S:.0f} s"
    if r.returncode != 0:
        why = (r.stderr.strip() or r.stdout.strip() or f"exit status {r.returncode}").splitlines()[0]
        return f"the SLURM controller is not reachable (sinfo: {why})"
    partitions = set(r.stdout.split())
    if partition and partition not in partitions:
        return f"partition {partition!r} does not exist: set cluster.partition to one of {', '.join(sorted(partitions))}"
    return None


def resources(cluster: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """What one job of `kind` asks SLURM for (cluster.resources.<kind>, all of RESOURCE_KEYS)."""
    table = cluster.get("resources") or {}
    if kind not in table:
        raise UserError(f"cluster.resources has no entry for job kind {kind!r}: add one to benchmarks/cluster/"
                        f"{cluster['name']}.yaml")
    res = dict(table[kind])
    missing = [k for k in RESOURCE_KEYS if res.get(k) is None]
    if missing:
        raise UserError(f"cluster.resources.{kind} lacks {', '.join(missing)}")
    bad = [k for k in RESOURCE_KEYS if not isinstance(res[k], (int, float)) or res[k] < (0 if k == "gpus_per_node" else 1)]
    if bad:
        raise UserError(f"cluster.resources.{kind}: {', '.join(f'{k}={res[k]!r}' for k in bad)} must be positive numbers")
    if res["timeout_min"] < MIN_TIMEOUT_MIN:
        raise UserError(f"cluster.resources.{kind}.timeout_min={res['timeout_min']} is too short: submitit asks for "
                        f"its requeue signal 90 s before the limit, so use at least {MIN_TIMEOUT_MIN}")
    return res


def check_world(jobs: list[Job], cluster: Mapping[str, Any]) -> None:
    """Data-parallel training splits the global batch evenly over its ranks: check before submitting."""
    for job in jobs:
        if job.kind != "train":
            continue
        res = resources(cluster, "train")
        ranks = res["nodes"] * res["tasks_per_node"]
        batch = job.config.get("train", {}).get("batch_size")
        if batch is not None and batch % ranks:
            raise UserError(f"train.batch_size={batch} does not split over {ranks} ranks "
                            f"(cluster.resources.train: {res['nodes']} node(s) x {res['tasks_per_node']} tasks): "
                            f"choose a multiple of {ranks}")


# --------------------------------------------------------------------------- dispatch

def dispatch(jobs: list[Job], cluster: Mapping[str, Any], store_root: str | Path, *,
             wait: bool = True, progress: Callable[[str], None] | None = print) -> DispatchReport:
    """Run or submit every job of `jobs` (and their dependencies) that the store does not hold."""
    store = JobStore(store_root)
    order = topological(jobs)
    cached = sum(store.dir(j).done for j in order)
    todo = [j for j in order if not store.dir(j).done]
    if cluster["name"] == "local":
        for job in todo:
            run_job(job, store_root)
        return DispatchReport(total=len(order), cached=cached, ran=len(todo))
    if cluster["name"] == "debug":
        executor = submitit.DebugExecutor(folder=str(Path(store_root) / SUBMITIT_DIR))
        for job in todo:  # dependencies first; the debug executor runs each on .result()
            executor.submit(run_job, job, str(store_root)).result()
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
            handles = [executor.submit(SlurmEntry(), job, str(store_root)) for job in group]
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


def submitted_id(d: JobDir) -> str | None:
    p = d / SLURM_FILE
    return json.loads(p.read_text())["job_id"] if p.exists() else None


def squeue_states() -> dict[str, tuple[str, str]]:
    """{SLURM job id: (state, reason)} of this user's jobs that the controller still knows.

    Array tasks appear one per line as "<array id>_<task>"; finished jobs stay listed for
    the cluster's MinJobAge.
    """
    r = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%T|%r"],
                       capture_output=True, text=True, timeout=SLURM_TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError(f"squeue failed: {r.stderr.strip() or r.returncode}")
    states = {}
    for line in r.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def wait_slurm(jobs: list[Job], ids: Mapping[str, str], store_root: Path, *, poll_s: float = 5.0,
               lost_after_s: float = 30.0, timeout_s: float | None = None,
               progress: Callable[[str], None] | None = print) -> None:
    """Block until every job is done in the store; JobFailed as soon as one fails or is lost.

    A job is lost when SLURM no longer lists it as alive and the store holds no result for
    `lost_after_s` (a requeued job passes through COMPLETING and PENDING, never long out of sight).
    TimeoutError after `timeout_s`, if given (the jobs stay queued).
    """
    from repro.status import job_state

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


# --------------------------------------------------------------------------- on the node

class SlurmEntry(submitit.helpers.Checkpointable):
    """What a SLURM job runs: one job of the store, stoppable at its next consistent point.

    submitit calls `checkpoint` (inherited: requeue this same call) when it requeues the job
    after USR2; the body has already saved its state by then, so the same call resumes it.
    """

    def __call__(self, job: Job, store_root: str) -> dict[str, Any]:
        _threads_from_slurm()
        usr = submitit.JobEnvironment._usr_sig()
        submitit_usr_handler = signal.getsignal(usr)
        if stoppable(job.kind):
            signal.signal(usr, request_stop)
            signal.signal(signal.SIGTERM, request_stop)
        try:
            return run_job(job, store_root)
        except Preempted as stop:
            if stop.signum == usr and callable(submitit_usr_handler) and submitit.JobEnvironment().global_rank == 0:
                submitit_usr_handler(usr, None)     # submitit: checkpoint(), scontrol requeue, exit
            # SIGTERM: SLURM requeues (preemption, scontrol requeue) or cancels the job itself.
            # SystemExit is no Exception to submitit: it writes no result for a job that is not over.
            raise SystemExit(1) from None


def _threads_from_slurm() -> None:
    """One torch thread per allocated CPU: jobs sharing a node must not oversubscribe it."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        import torch

        torch.set_num_threads(int(cpus))
