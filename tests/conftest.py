"""Suite-wide settings: the test models are tiny, so one torch thread is faster than two
(OpenMP synchronisation dominates) and keeps timings steady on a shared 2-core machine."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")   # for subprocesses the tests start
os.environ.setdefault("REPRO_LOCAL_WORKERS", "1")   # tiny jobs: one at a time (tests/test_dispatch_local.py tests the pool)


SLURM_LOCAL = Path(__file__).resolve().parents[1] / "scripts" / "slurm-local.sh"


def _cluster_problem() -> str | None:
    """Why the local SLURM cluster cannot be used, or None when it is up."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH; start the cluster with: sudo scripts/slurm-local.sh up"
    status = subprocess.run(["bash", str(SLURM_LOCAL), "status"], capture_output=True, text=True, timeout=60)
    if status.returncode != 0:
        last = (status.stdout.strip().splitlines() or ["no output"])[-1]
        return f"local SLURM cluster is not up ({last}); start it with: sudo scripts/slurm-local.sh up"
    return None


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    """Skip without the local cluster; fail instead when REPRO_REQUIRE_SLURM=1 (CI)."""
    problem = _cluster_problem()
    if problem is not None:
        if os.environ.get("REPRO_REQUIRE_SLURM") == "1":
            pytest.fail(f"REPRO_REQUIRE_SLURM=1 but {problem}", pytrace=False)
        pytest.skip(problem)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests, restored after it: tiny models on a loaded
    2-core machine, where OpenMP's barriers cost more than a second thread saves, and a module
    before may have changed the count (use: pytestmark = pytest.mark.usefixtures("one_thread"))."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """One scratch root (embedded data, job store, tables) for the tiny-table tests. Tables 1-3
    train the same models at the tiny profile and every table reads the same embedded data and
    feature network: in one store each of those jobs runs once per session, whichever test module
    asks first, instead of once per module. Tests that inspect the store select their table's jobs
    through its plan (not by listing the folder).

    Under pytest-xdist (`make test` runs one worker per core) the root is shared by every worker
    of the run: the job store's locks make each job run once whichever worker asks first (the
    others wait for it, as concurrent `repro.table` runs do), and the embedded data is written
    atomically, so two workers drawing the same split write the same bytes."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.getbasetemp().parent / "tiny"   # basetemp is per worker; its parent is the run's
        root.mkdir(exist_ok=True)
        return root
    return tmp_path_factory.mktemp("tiny")
