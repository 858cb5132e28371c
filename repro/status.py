"""python -m repro.status N [--profile tiny|smoke|paper] [--store jobs] [key=value ...]

Lists the jobs of table N (the same plan `python -m repro.table` makes with these options)
with their state, SLURM job id and log, and prints the last lines of the log of each
failed job. Reads the job store and, where SLURM is reachable, squeue; changes nothing.
`--cluster` only selects the config the plan is made with: SLURM's queue is read whenever
it is reachable. What each state means: `repro.jobs.state`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping

import click

from repro.cli import cluster_option, profile_option, run, store_option
from repro.dispatch.slurm_queue import queue_or_none
from repro.jobs.job import Job, topological
from repro.jobs.state import SUBMITIT_DIR, job_state
from repro.jobs.store import JobStore

TAIL_LINES = 10


def _tail(path: str | Path, n: int) -> list[str]:
    p = Path(path)
    return p.read_text(errors="replace").splitlines()[-n:] if p.is_file() else []


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
    submitit_dir = store.root.resolve() / SUBMITIT_DIR
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
@profile_option
@cluster_option
@store_option
@click.option("--lines", default=TAIL_LINES, show_default=True, help="log lines shown per failed job")
def main(table: str, overrides: tuple[str, ...], profile: str, cluster: str, store: Path, lines: int) -> None:
    """List the jobs of one table (or `all`) with their state and logs."""
    from repro.config import available_tables, compose
    from repro.plan import table_jobs
    from repro.schema import check

    for t in available_tables() if table == "all" else [table]:
        cfg = compose(t, profile, cluster, overrides)
        check(cfg)   # the plan of a config the table would refuse means nothing
        rows, points, diagnostics = table_jobs(cfg)   # what `python -m repro.table` runs
        jobs = [r.job for r in rows] + [p.job for p in points] + diagnostics
        print(f"table {t} ({profile} profile)")
        print(report(jobs, JobStore(store), queue_or_none(), lines))


def cli(argv: list[str] | None = None) -> int:
    return run(main, "python -m repro.status", argv)


if __name__ == "__main__":
    sys.exit(cli())
