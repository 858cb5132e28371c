"""python -m repro.status N [--profile tiny|smoke|paper] [--store jobs] [key=value ...]

Lists the jobs of table N (the same plan `python -m repro.table` makes with these options)
with their state, SLURM job id and log, and prints the last lines of the log of each
failed job. Reads the job store and, where SLURM is reachable, squeue; changes nothing.

States: done | running | pending (queued in SLURM, waiting for its dependencies or a slot)
| preempted (checkpointed, waiting to be requeued) | failed | lost (submitted, but SLURM
no longer lists it and it left no result) | interrupted (a local run that died; a re-run
resumes it) | not started.
"""
from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import click

from repro.cli import run
from repro.jobs.job import Job, topological
from repro.jobs.store import JobStore

TAIL_LINES = 10


@dataclass
class JobState:
    state: str
    detail: str = ""
    slurm_id: str | None = None
    log: str = ""                        # the job's own log (jobs/<key>/log.txt)
    slurm_logs: list[str] = field(default_factory=list)   # submitit's stdout and stderr, if submitted


def job_state(job: Job, store: JobStore, queue: Mapping[str, tuple[str, str]] | None) -> JobState:
    """Where `job` stands, from its folder and (if not None) SLURM's queue {id: (state, reason)}."""
    from repro.cluster import ALIVE, SLURM_FILE

    d = store.dir(job)
    status = d.status()
    slurm = json.loads((d / SLURM_FILE).read_text()) if (d / SLURM_FILE).exists() else {}
    sid = slurm.get("job_id") or status.get("slurm_job_id")
    st = JobState("not started", slurm_id=sid, log=str((d / "log.txt").resolve()),
                  slurm_logs=[p for p in (slurm.get("stdout"), slurm.get("stderr")) if p])
    if d.done:
        st.state = "done"
        wall = d.result().get("provenance", {}).get("wall_time_s")
        st.detail = f"{wall} s" if wall is not None else ""
        return st
    state = status.get("state", "not started")
    if state == "damaged":      # checksums (repro/jobs/store.py): the next run repairs and recomputes it
        st.state, st.detail = "damaged", "; ".join(status.get("damage", []))
        return st
    if state == "failed":
        st.state, st.detail = "failed", status.get("error", "")
        return st
    if sid and queue is not None:
        q_state, reason = queue.get(sid, ("", ""))
        if q_state not in ALIVE:
            st.state = "lost"
            st.detail = f"SLURM lists it as {q_state}" if q_state else "SLURM no longer lists it"
            st.detail += (f" ({reason})" if reason and reason != "None" else "") + " and it left no result"
        elif q_state == "RUNNING":
            st.state, st.detail = "running", _progress(status, job)
        elif state == "preempted":
            st.state, st.detail = "preempted", f"checkpoint at step {status.get('step')}, {q_state.lower()}"
        else:
            st.state = "pending"
            st.detail = q_state.lower() + (f" ({reason})" if reason and reason != "None" else "")
        return st
    if state == "running" and not sid:       # a local run: alive only if its process is
        alive = status.get("host") == socket.gethostname() and _pid_alive(status.get("pid"))
        st.state, st.detail = ("running", _progress(status, job)) if alive else ("interrupted", _progress(status, job))
    elif state in ("running", "submitted", "preempted"):
        st.state, st.detail = state, "SLURM not reachable from here"
    return st


def _progress(status: Mapping[str, Any], job: Job) -> str:
    step, steps = status.get("step"), job.config.get("train", {}).get("steps") if job.kind == "train" else None
    return f"step {step}/{steps}" if step is not None and steps else ""


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _tail(path: str | Path, n: int) -> list[str]:
    p = Path(path)
    return p.read_text(errors="replace").splitlines()[-n:] if p.is_file() else []


def queue_or_none() -> dict[str, tuple[str, str]] | None:
    """SLURM's queue if this machine can ask for it, else None (the store alone is shown)."""
    from repro.cluster import slurm_problem, squeue_states

    if slurm_problem() is not None:
        return None
    try:
        return squeue_states()
    except (RuntimeError, OSError):
        return None


def report(jobs: list[Job], store: JobStore, queue: Mapping[str, tuple[str, str]] | None,
           lines: int = TAIL_LINES) -> str:
    """The status listing of `jobs` (and their dependencies) as text."""
    order = topological(jobs)
    states = [(job, job_state(job, store, queue)) for job in order]
    counts: dict[str, int] = {}
    for _, st in states:
        counts[st.state] = counts.get(st.state, 0) + 1
    out = [f"{len(order)} jobs in {store.root.resolve()}: " + ", ".join(f"{n} {s}" for s, n in counts.items())
           + ("" if queue is not None else " (SLURM not reachable: states from the store only)")]
    w = max(len(job.name) for job in order) if order else 10
    out.append(f"{'job':<{w}}  {'kind':<8}  {'state':<11}  {'slurm id':<10}  {'detail':<30}  log")
    for job, st in states:
        out.append(f"{job.name:<{w}}  {job.kind:<8}  {st.state:<11}  {st.slurm_id or '-':<10}  "
                   f"{st.detail[:30]:<30}  {st.log}")
    submitit_dir = store.root.resolve() / "_submitit"
    if any(st.slurm_id for _, st in states):
        out.append(f"submitit stdout/stderr of SLURM job <id>: {submitit_dir}/<id>_0_log.out, .err")
    for job, st in states:
        if st.state not in ("failed", "lost"):
            continue
        out.append(f"\n{job.name} {st.state}: {st.detail}")
        for path in [st.log, *st.slurm_logs]:
            tail = _tail(path, lines)
            if tail:
                out.append(f"  last lines of {path}:")
                out.extend(f"  | {line}" for line in tail)
    return "\n".join(out)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("table")
@click.argument("overrides", nargs=-1)
@click.option("--profile", default="smoke", show_default=True, help="tiny | smoke | paper")
@click.option("--cluster", default="local", show_default=True,
              help="local | debug | slurm (only selects the config; SLURM's queue is read whenever it is reachable)")
@click.option("--store", type=click.Path(path_type=Path), default=Path("jobs"), show_default=True,
              help="job store folder")
@click.option("--lines", default=TAIL_LINES, show_default=True, help="log lines shown per failed job")
def main(table: str, overrides: tuple[str, ...], profile: str, cluster: str, store: Path, lines: int) -> None:
    """List the jobs of one table (or `all`) with their state and logs."""
    from repro.config import available_tables, compose
    from repro.plan import plan

    for t in available_tables() if table == "all" else [table]:
        cfg = compose(t, profile, cluster, overrides)
        jobs = [r.job for r in plan(cfg)]
        print(f"table {t} ({profile} profile)")
        print(report(jobs, JobStore(store), queue_or_none(), lines))


def cli(argv: list[str] | None = None) -> int:
    return run(main, "python -m repro.status", argv)


if __name__ == "__main__":
    sys.exit(cli())
