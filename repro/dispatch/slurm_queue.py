"""What this machine can learn from the SLURM controller: squeue and sinfo, in subprocesses.

The only module that runs SLURM's command-line tools (sbatch itself is submitit's business);
every call is bounded by SLURM_TIMEOUT_S, so an unreachable controller is an error, not a hang.
"""
from __future__ import annotations

import getpass
import shutil
import subprocess

SLURM_TIMEOUT_S = 15.0          # for every squeue/sinfo call
TOOLS = ("sbatch", "squeue", "sinfo", "scontrol")


def slurm_problem(partition: str | None = None) -> str | None:
    """Why SLURM cannot take jobs from here, in one line, or None."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
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


def queue_or_none() -> dict[str, tuple[str, str]] | None:
    """SLURM's queue if this machine can ask for it, else None (callers then read the store alone)."""
    if slurm_problem() is not None:
        return None
    try:
        return squeue_states()
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return None
