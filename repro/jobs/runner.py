"""Run one job body inside its folder: status, log, provenance, atomic result.

Cluster-agnostic: the same `run_job` executes in this process (`--cluster local`),
inside submitit's debug executor, or on a SLURM node, as one rank or several (only
rank 0 keeps the books: status, log.txt, result; rank r logs to log.rank<r>.txt).

Stopping: whoever owns the process's signals (repro/dispatch/slurm_entry.py on SLURM) calls
`request_stop(signum)`; long job bodies poll `stop_requested()` at points where their
state is consistent, save it, and raise `Preempted`. The job then ends as "preempted"
(not failed) and resumes from that state when it runs again.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping

from repro.errors import UserError
from repro.io import atomic_write_json
from repro.jobs.job import Job
from repro.jobs.lock import JobLock
from repro.jobs.state import JobFailed
from repro.jobs.store import JobDir, JobStore

# kind -> module whose `run(cfg, out, deps) -> dict` is the job body
BODIES = {
    "features": "repro.jobs.features",
    "train": "repro.jobs.train",
    "sample": "repro.jobs.sample",
    "evaluate": "repro.jobs.evaluate",
    "generate": "repro.jobs.generate",       # Tables 2-3: samples from scratch / restorations
    "classifier": "repro.jobs.classifier",   # ADM noisy classifier: guidance, Figure 6
    "released": "repro.jobs.released",       # a released guided-diffusion checkpoint (paper ADM*)
    "dense_train": "repro.jobs.dense_train",         # DiffusionMTL: networks on partially labelled images
    "dense_predict": "repro.jobs.dense_predict",     # their test predictions, before and after denoising
    "dense_evaluate": "repro.jobs.dense_evaluate",   # DiffusionMTL's dense metrics and delta_m
    "diagnose": "repro.jobs.diagnose",       # held-out eps MSE per timestep bucket of a trained model
}
LOCK = "lock"   # in the job's folder while a process computes it


class Preempted(Exception):
    """A job body stopped at a consistent point after saving its state, because it was asked to."""

    def __init__(self, signum: int | None, step: int | None = None):
        self.signum, self.step = signum, step
        super().__init__(f"stopped by {_signal_name(signum)} after step {step}, state saved")


_stop_signal: int | None = None


def request_stop(signum: int, frame: Any = None) -> None:
    """Ask the running job body to save its state and stop (usable as a signal handler)."""
    global _stop_signal
    _stop_signal = signum


def stop_requested() -> int | None:
    """The signal that asked this process to stop, or None."""
    return _stop_signal


def _signal_name(signum: int | None) -> str:
    import signal

    if signum is None:
        return "another rank"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def declared_reads(kind: str, view: dict) -> list[str] | None:
    """The config paths the body of `kind` declares it reads of `view` (its module's
    `reads(view)`), or None where the body declares nothing yet (its key hashes all of `view`)."""
    reads = getattr(importlib.import_module(BODIES[kind]), "reads", None)
    return None if reads is None else list(reads(view))


def body(kind: str) -> Callable[[dict, JobDir, dict[str, JobDir]], dict[str, Any]]:
    return importlib.import_module(BODIES[kind]).run


def stoppable(kind: str) -> bool:
    """Whether the body polls `stop_requested()` (its module says `STOPPABLE = True`)."""
    return bool(getattr(importlib.import_module(BODIES[kind]), "STOPPABLE", False))


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


CUBLAS_WORKSPACE = ":4096:8"   # what cuBLAS needs to pick deterministic GEMM reductions (CUDA >= 10.2)


def deterministic_setting(cluster: Mapping[str, Any]) -> bool | None:
    """`cluster.deterministic` (true, false, or null: leave torch's setting alone); UserError otherwise."""
    value = cluster.get("deterministic")
    if value is not None and not isinstance(value, bool):
        raise UserError(f"cluster.deterministic={value!r} takes true, false or null")
    return value


def set_deterministic(on: bool | None) -> None:
    """Ask torch for deterministic kernels in this process (`cluster.deterministic`; None: as is).

    On: `torch.use_deterministic_algorithms(True, warn_only=True)`, cuDNN autotuning off, and
    CUBLAS_WORKSPACE_CONFIG set (unless the user set it) before any CUDA work, as cuBLAS
    requires. `warn_only`: an op that has no deterministic kernel (on CUDA, e.g. the backward
    of nearest-neighbour upsampling) warns once in the job's log instead of failing the job,
    so such a run is reproducible except for those ops. On the CPU, torch's kernels are
    deterministic at a fixed thread count either way, so the setting is not expected to change
    CPU numbers (not yet compared on a full table); on a GPU it trades
    speed for run-to-run equality. Each job's provenance records it (`_threads`).
    """
    if on is None:
        return
    import torch

    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(on, warn_only=True)


def run_job(job: Job, store_root: str | Path, deterministic: bool | None = None) -> dict[str, Any]:
    """Execute `job` unless the store holds its result intact; return its result.

    Rank 0 holds the job's lock (repro.jobs.lock) from the integrity check to the result:
    a concurrent run of the same job waits for it and then reads its result. Under the lock
    the folder is scrubbed (repro.jobs.store: damaged files discarded, orphan temp files
    removed), so the body only ever sees intact files, and the digests of the inputs it
    reads are recorded (inputs.json) so that a changed input makes it recompute later.
    """
    from repro.jobs.distributed import world_from_environment

    set_deterministic(deterministic)
    store = JobStore(store_root)
    world = world_from_environment()
    out = store.dir(job)
    if out.done:
        return out.result()
    if not world.is_main:   # another rank of a data-parallel job: compute, keep no books
        deps = _ready_deps(job, store)
        out.path.mkdir(parents=True, exist_ok=True)
        with _logging_to(out / f"log.rank{world.rank}.txt"):
            return body(job.kind)(dict(job.config), out, deps)
    out.path.mkdir(parents=True, exist_ok=True)
    with JobLock(out / LOCK, on_wait=lambda holder: _waiting(job, out, holder)) as lock:
        repairs = out.scrub()
        store.prepare(job)
        if out.done:        # finished by the process we waited for, or only resume state was damaged
            _log_repairs(out, repairs)
            return out.result()
        return _run_locked(job, out, _ready_deps(job, store), lock, repairs)


def _ready_deps(job: Job, store: JobStore) -> dict[str, JobDir]:
    deps = {role: store.dir(dep) for role, dep in job.deps.items()}
    missing = [role for role, d in deps.items() if not d.done]
    if missing:
        raise RuntimeError(f"job {job.name} ({job.key}) started before its dependencies {missing} finished")
    return deps


def _waiting(job: Job, out: JobDir, holder: dict[str, Any]) -> None:
    since = time.strftime("%H:%M:%S", time.localtime(holder["started"])) if "started" in holder else "?"
    print(f"{job.name} [{job.key}] is being computed by {holder.get('host', '?')} pid {holder.get('pid', '?')} "
          f"(since {since}; log {out / 'log.txt'}): waiting for it", flush=True)


def _log_repairs(out: JobDir, repairs: list[str]) -> None:
    if repairs:
        with open(out / "log.txt", "a") as log:
            for line in repairs:
                print(f"store check: {line}", file=log, flush=True)
                print(f"{out.path.name}: store check: {line}", flush=True)


def _run_locked(job: Job, out: JobDir, deps: dict[str, JobDir], lock: JobLock, repairs: list[str]) -> dict[str, Any]:
    from repro.report.provenance import git_commit

    started = time.time()
    out.set_status("running", started=started, name=job.name, **_slurm_info())
    with _logging_to(out / "log.txt"):
        print(f"== {job.name} [{job.key}] ==", flush=True)
        for line in repairs:
            print(f"store check: {line}", flush=True)
        if out.record_inputs({role: {"key": d.key, "digest": d.digest()} for role, d in sorted(deps.items())}):
            print("store check: inputs changed since the files here were computed: starting again", flush=True)
        try:
            result = body(job.kind)(dict(job.config), out, deps)
        except Preempted as stop:
            print(f"{job.name}: {stop}", flush=True)
            out.set_status("preempted", step=stop.step, wall_time_s=time.time() - started)
            raise
        except BaseException as err:
            # The traceback goes to the log only; the user sees one line naming that log.
            traceback.print_exc(file=getattr(sys.stderr, "log", sys.stderr))
            out.set_status("failed", error=f"{type(err).__name__}: {err}", wall_time_s=time.time() - started)
            if not isinstance(err, Exception):      # Ctrl-C, SystemExit: end as they would
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            where = f"log: {out / 'log.txt'}"
            if isinstance(err, UserError):          # bad input met inside the job: still exit 2
                raise UserError(f"{job.name}: {first} ({where})") from None
            raise JobFailed(f"{job.name} failed ({type(err).__name__}: {first}); {where}") from None
    if not lock.held():     # judged stale while alive (a frozen node): the new holder owns status and result
        raise RuntimeError(f"{job.name} ({job.key}): lost its lock {out / LOCK} while running (judged stale by "
                           f"another process); not publishing its result")
    wall = time.time() - started
    result = {**result, "provenance": {"key": job.key, "name": job.name, "git_commit": git_commit(),
                                       "wall_time_s": round(wall, 2), "finished": time.time(), **_threads()}}
    atomic_write_json(out / "result.json", result)
    out.set_status("done", wall_time_s=round(wall, 2))
    return result


def _threads() -> dict[str, Any]:
    """The CPU thread settings the job ran with. Results on CPU are bit-identical run to run at
    a fixed intra-op thread count, but not across counts (a float reduction split over more
    threads adds in another order): the tiny feature network's final loss is 1.13509 at one
    thread and 1.13157 at two. Set OMP_NUM_THREADS (or --cpus-per-task on SLURM) to compare."""
    import torch

    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


def _slurm_info() -> dict[str, Any]:
    """The SLURM job this process runs in (id as submitit names it, restarts so far), if any."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return {}
    import submitit

    return {"slurm_job_id": submitit.JobEnvironment().job_id,
            "restarts": int(os.environ.get("SLURM_RESTART_COUNT", 0))}
