"""Checks of a cluster config before anything is submitted: the backend exists, SLURM is
reachable with the configured partition, every job kind asks for a complete, sane set of
resources, and data-parallel training splits its batch evenly over its ranks.

Everything here raises `UserError` (exit status 2, one line) and runs before a job starts.
"""
from __future__ import annotations

from typing import Any, Mapping

from repro.dispatch.slurm_queue import slurm_problem
from repro.errors import UserError
from repro.jobs.job import Job

CLUSTERS = ("local", "debug", "slurm")   # the backends `repro.dispatch.dispatch` knows
JOB_KINDS = ("features", "train", "sample", "evaluate")   # every cluster config sizes at least these
RESOURCE_KEYS = ("nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min")
MIN_TIMEOUT_MIN = 5             # shorter limits get submitit's USR2 (90 s early, or up to 60 s more) at once


def check_cluster(cluster: Mapping[str, Any]) -> None:
    """UserError unless jobs can be dispatched to `cluster` (SLURM: reachable, partition exists)."""
    if cluster["name"] not in CLUSTERS:
        raise UserError(f"cluster {cluster['name']!r} is not available here: choose one of {', '.join(CLUSTERS)}")
    from repro.jobs.runner import deterministic_setting

    deterministic_setting(cluster)
    if cluster["name"] == "local":
        from repro.dispatch.local import local_settings

        local_settings(cluster)
    if cluster["name"] == "slurm":
        problem = slurm_problem(cluster.get("partition"))
        if problem:
            raise UserError(f"--cluster slurm: {problem}")
        for kind in JOB_KINDS:
            resources(cluster, kind)


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
