"""The local SLURM cluster (scripts/slurm-local.sh) runs submitit jobs, job arrays and
multi-task jobs end to end.

Skipped when no cluster is up, unless REPRO_REQUIRE_SLURM=1 (CI): there a missing cluster
is a failure, so CI cannot turn green by silently skipping the only test of the cluster.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SLURM_LOCAL = REPO / "scripts" / "slurm-local.sh"
PARTITION = "debug"
# One job takes ~2 s here; the bound only turns a lost job into a failure instead of a hang
# (without accounting, submitit cannot tell that a job died without writing a result).
JOB_DEADLINE_S = 40.0

# The job unpickles these functions in a fresh interpreter, where this module (imported by
# pytest from tests/, which is not a package) cannot be imported: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _job_report(x: int) -> dict[str, Any]:
    """Runs on the cluster: x squared, plus what only a SLURM job can know about itself."""
    env = submitit.JobEnvironment()
    return {
        "square": x * x,
        "pid": os.getpid(),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "rank": env.global_rank,
        "num_tasks": env.num_tasks,
    }



@pytest.fixture
def executor(slurm_cluster: None, tmp_path: Path) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=tmp_path)
    # AutoExecutor silently falls back to local processes when sbatch is missing; the tests
    # below would then prove nothing about the cluster.
    assert ex.cluster == "slurm"
    # submitit asks SLURM for its timeout signal (USR2) 90 s before the limit, and SLURM may
    # send it up to 60 s earlier still: a limit under ~3 min can signal a job as it starts.
    ex.update_parameters(timeout_min=5, slurm_partition=PARTITION, cpus_per_task=1)
    return ex


def _result(job: submitit.Job) -> Any:
    """job.results() (one entry per task), failing instead of hanging if the job is lost."""
    deadline = time.monotonic() + JOB_DEADLINE_S
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"SLURM job {job.job_id} gave no result in {JOB_DEADLINE_S:.0f}s; "
                        f"stderr:\n{job.stderr()}")
        time.sleep(0.2)
    return job.results()


def test_batch_job_returns_its_result(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(_job_report, 7)
    (report,) = _result(job)
    assert report["square"] == 49
    # Ran as that very SLURM job, in the requested partition, in another process.
    assert report["job_id"] == job.job_id
    assert report["partition"] == PARTITION
    assert report["pid"] != os.getpid()
    assert report["array_task_id"] is None


def test_job_array_maps_inputs_to_tasks_in_order(executor: submitit.AutoExecutor) -> None:
    inputs = [3, 11]
    jobs = executor.map_array(_job_report, inputs)
    reports = [_result(job)[0] for job in jobs]
    assert [r["square"] for r in reports] == [x * x for x in inputs]
    # One SLURM array: same array id, task ids 0 and 1 matching submitit's "<array>_<task>".
    array_ids = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_ids) == 1
    assert [(r["array_job_id"], r["array_task_id"]) for r in reports] == [
        (job.job_id.split("_")[0], job.job_id.split("_")[1]) for job in jobs
    ]
    assert reports[0]["job_id"] != reports[1]["job_id"]


def test_two_task_job_runs_one_process_per_rank(executor: submitit.AutoExecutor) -> None:
    # Data-parallel training launches one process per rank through srun inside the job.
    executor.update_parameters(tasks_per_node=2)
    job = executor.submit(_job_report, 5)
    reports = _result(job)
    assert sorted((r["rank"], r["num_tasks"]) for r in reports) == [(0, 2), (1, 2)]
    assert {r["job_id"] for r in reports} == {job.job_id}
    assert reports[0]["pid"] != reports[1]["pid"]
    assert all(r["square"] == 25 for r in reports)
