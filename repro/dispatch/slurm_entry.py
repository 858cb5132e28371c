"""What a SLURM job runs on its node: one job of the store, stoppable at its next consistent point.

Preemption and time limits: `SlurmEntry` turns SLURM's SIGTERM (preemption, `scontrol
requeue`, scancel) and submitit's USR2 (sent 90 s before the time limit) into a stop request
(`repro.jobs.runner.request_stop`) that a stoppable job body (training) honours at its next
step boundary: it checkpoints, stops, and after USR2 submitit requeues it; after SIGTERM SLURM
itself requeues (or cancels) it. A requeued job resumes from its checkpoint. Job bodies that
do not poll keep submitit's handlers: on USR2 they are requeued at once and start again from
scratch.

submitit pickles a `SlurmEntry` instance by reference to this module: a job queued before
the class moved cannot be unpickled after (resubmit it).
"""
from __future__ import annotations

import os
import signal
from typing import Any

import submitit

from repro.jobs.job import Job
from repro.jobs.runner import Preempted, request_stop, run_job, stoppable


class SlurmEntry(submitit.helpers.Checkpointable):
    """The callable submitit runs on the node: `run_job` with SLURM's signals turned into stop requests.

    submitit calls `checkpoint` (inherited: requeue this same call) when it requeues the job
    after USR2; the body has already saved its state by then, so the same call resumes it.
    """

    def __init__(self, deterministic: bool | None = None):
        self.deterministic = deterministic   # cluster.deterministic (repro.jobs.runner.set_deterministic)

    def __call__(self, job: Job, store_root: str) -> dict[str, Any]:
        _threads_from_slurm()
        usr = submitit.JobEnvironment._usr_sig()
        submitit_usr_handler = signal.getsignal(usr)
        if stoppable(job.kind):
            signal.signal(usr, request_stop)
            signal.signal(signal.SIGTERM, request_stop)
        try:
            return run_job(job, store_root, getattr(self, "deterministic", None))   # older pickles lack it
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
