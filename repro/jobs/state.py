"""Where a job stands: its folder in the store plus, if it was submitted, SLURM's queue.

This is the job layer's view of job state, shared by whoever asks: the dispatcher waiting
on its submitted jobs (`repro.dispatch.slurm`) and the status listing (`python -m
repro.status`). It reads, never writes: the queue is passed in as `{SLURM id: (state,
reason)}` (from `repro.dispatch.slurm_queue.squeue_states`, or None where SLURM is not
reachable), so nothing here runs a subprocess.

States: done | running | pending (queued in SLURM, waiting for its dependencies or a slot)
| preempted (checkpointed, waiting to be requeued) | failed | lost (submitted, but SLURM
no longer lists it and it left no result) | interrupted (a local run that died; a re-run
resumes it) | not started.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Mapping

from repro.jobs.job import Job
from repro.jobs.store import JobDir, JobStore

SLURM_FILE = "slurm.json"      # inside a job's folder: its latest SLURM submission
SUBMITIT_DIR = "_submitit"     # inside the job store: submitit's pickles and stdout/stderr
# squeue states of a job that may still produce a result (requeued jobs pass through COMPLETING).
ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
         "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED"}


class JobFailed(RuntimeError):
    """A submitted job failed or left the queue without a result (the message says where its log is)."""


@dataclass
class JobState:
    state: str
    detail: str = ""
    slurm_id: str | None = None
    log: str = ""                        # the job's own log (jobs/<key>/log.txt)
    slurm_logs: list[str] = field(default_factory=list)   # submitit's stdout and stderr, if submitted


def submission(d: JobDir) -> dict[str, Any]:
    """The job's latest SLURM submission as the dispatcher recorded it ({} if never submitted)."""
    p = d / SLURM_FILE
    return json.loads(p.read_text()) if p.exists() else {}


def submitted_id(d: JobDir) -> str | None:
    """The SLURM job id of the job's latest submission, or None."""
    return submission(d).get("job_id")


def job_state(job: Job, store: JobStore, queue: Mapping[str, tuple[str, str]] | None) -> JobState:
    """Where `job` stands, from its folder and (if not None) SLURM's queue {id: (state, reason)}."""
    d = store.dir(job)
    status = d.status()
    slurm = submission(d)
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
