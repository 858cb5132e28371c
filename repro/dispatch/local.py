"""The in-process backends: `local` runs the jobs on this machine, `debug` goes through
submitit's in-process debug executor, which exercises the submitit path (pickling, job
folders) without a cluster.

`local` runs `cluster.workers` jobs at once (each in its own process once there are two or
more; dependencies first) with `cluster.threads` intra-op threads each. The CPU profiles
fix the thread count (benchmarks/cluster/local.yaml: 1) because CPU results are bit-identical
run to run only at a fixed count: a float reduction split over more threads adds in another
order (repro/jobs/runner.py `_threads`). Fixing it makes a table's numbers the same on a
laptop and on a 64-core node; the cores go to jobs in parallel instead.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Mapping

import submitit

from repro.errors import UserError
from repro.jobs.job import Job
from repro.jobs.runner import run_job
from repro.jobs.state import SUBMITIT_DIR


def local_settings(cluster: Mapping[str, Any]) -> tuple[int, int | None]:
    """(workers, threads) of a local cluster config; `workers: auto` = the CPUs this process may
    use (1 when a GPU is visible: jobs would share it); `threads: null` = torch's default."""
    workers, threads = cluster.get("workers", 1), cluster.get("threads")
    if isinstance(workers, str) and workers.isdigit():   # from the environment (REPRO_LOCAL_WORKERS)
        workers = int(workers)
    if workers == "auto":
        import torch

        workers = 1 if torch.cuda.is_available() else len(os.sched_getaffinity(0))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(f"cluster.workers={workers!r} must be a positive integer or auto")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UserError(f"cluster.threads={threads!r} must be a positive integer or null (torch's default)")
    return workers, threads


def run_local(todo: list[Job], store_root: str | Path, *, workers: int = 1, threads: int | None = None,
              progress: Callable[[str], None] | None = print, deterministic: bool | None = None) -> None:
    """Run `todo` (dependencies first) on this machine, `workers` jobs at a time
    (`deterministic`: cluster.deterministic, applied in the process that runs each job)."""
    if workers <= 1 or len(todo) <= 1:
        _set_threads(threads)
        for job in todo:
            run_job(job, store_root, deterministic)
        return
    _run_pool(todo, str(store_root), workers, threads, progress or (lambda line: None), deterministic)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: a worker must not outlive the run that started it (a killed
    `repro.table` would leave its jobs computing, holding their locks). Linux: the kernel sends
    SIGKILL when the parent exits; the job resumes from its last checkpoint when run again."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    if os.getppid() != parent:   # the parent died before prctl took effect
        os._exit(1)


def _worker(job: Job, store_root: str, threads: int | None, deterministic: bool | None = None) -> float:
    """One job in a worker process. Its progress bars (tqdm writes to stderr) go to the job's
    log.txt only: the terminal would interleave several; its printed lines (results, "waiting
    for" another process's lock) go to the log and to the terminal."""
    _set_threads(threads)
    started = time.time()
    with open(os.devnull, "w") as quiet:
        err, sys.stderr = sys.stderr, quiet
        try:
            run_job(job, store_root, deterministic)
        finally:
            sys.stderr = err
    return time.time() - started


def _run_pool(todo: list[Job], store_root: str, workers: int, threads: int | None,
              progress: Callable[[str], None], deterministic: bool | None = None) -> None:
    """Start each job once the jobs it reads have finished; after a failure start nothing new,
    let the running jobs finish (their results stay in the store) and raise the first error."""
    waiting = {job.key: job for job in todo}
    blockers = {job.key: {d.key for d in job.deps.values() if d.key in waiting} for job in todo}
    running: dict[Future, Job] = {}
    finished, error = 0, None
    # spawn, not fork: a forked child of a process that has used OpenMP threads can hang.
    context = multiprocessing.get_context("spawn")
    progress(f"running {len(todo)} jobs, {workers} at a time ({threads or 'default'} thread(s) each); "
             f"each job's output is in its log.txt (`python -m repro.status` lists them)")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        while waiting or running:
            if error is None:
                for key in [k for k, b in blockers.items() if not b and k in waiting]:
                    if len(running) >= workers:
                        break
                    job = waiting.pop(key)
                    del blockers[key]
                    running[pool.submit(_worker, job, store_root, threads, deterministic)] = job
                    progress(f"[{finished}/{len(todo)}] started {job.name} [{job.key}]")
            elif not running:
                break
            if not running:   # nothing can start: a dependency cycle would be a bug in the plan
                raise RuntimeError(f"jobs {sorted(waiting)} wait on jobs that are not in the plan")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                try:
                    seconds = future.result()
                except BaseException as err:   # noqa: BLE001 - re-raised below, after the others end
                    error = error or err
                    progress(f"[{finished}/{len(todo)}] {job.name} [{job.key}] failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
                    continue
                finished += 1
                progress(f"[{finished}/{len(todo)}] done {job.name} [{job.key}] in {seconds:.0f} s")
                for b in blockers.values():
                    b.discard(job.key)
    if error is not None:
        raise error


def run_debug(todo: list[Job], store_root: str | Path, deterministic: bool | None = None) -> None:
    """Run `todo` (dependencies first) through submitit's debug executor."""
    executor = submitit.DebugExecutor(folder=str(Path(store_root) / SUBMITIT_DIR))
    for job in todo:  # dependencies first; the debug executor runs each on .result()
        executor.submit(run_job, job, str(store_root), deterministic).result()
