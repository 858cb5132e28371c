"""A job: a frozen, fully resolved config, its kind, and the jobs it reads from.

A job's key is a hash of (kind, config, dependency keys, CODE_VERSION): the same
experiment always lands in the same `jobs/<key>/` folder, so a finished job is never
recomputed and an interrupted one resumes where it stopped. The config is exactly what
the job's body reads: each body declares the config paths it reads (`reads(view)` beside
the body, e.g. repro/jobs/train.py), the plan keeps only those (`select`), and
tests/test_job_reads.py runs the bodies on a config that records every read to hold the
declarations to the code. A setting a job never reads is then not in its key, so changing
it does not recompute the job. Provenance (git commit,
host, wall time) is recorded in the folder but is not part of the key: a new commit
that does not change what a job computes must not invalidate the store. Bump
CODE_VERSION when a change alters results.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

CODE_VERSION = "2"   # 2: EMA warm-up


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Job:
    kind: str                      # which body runs it: features | train | sample | evaluate
    name: str                      # human label, e.g. "train/mt_x"
    config: Mapping[str, Any]      # plain JSON-able dict, fully resolved
    deps: Mapping[str, "Job"] = field(default_factory=dict)   # role -> job this one reads

    @property
    def key(self) -> str:
        payload = {
            "kind": self.kind,
            "config": self.config,
            "deps": {role: dep.key for role, dep in sorted(self.deps.items())},
            "code_version": CODE_VERSION,
        }
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]

    def __hash__(self) -> int:  # config is a dict: hash by key
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.key == self.key


def select(view: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """The part of `view` at the dotted `paths`, nested as in `view`.

    A path naming a block ("unet") takes the whole block; a path that `view` does not hold is
    left out (a body reading it with a default then reads the default, as the key says).
    """
    out: dict[str, Any] = {}
    for path in paths:
        parts, node = path.split("."), view
        for part in parts:
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = node
    return out


def topological(jobs: list[Job]) -> list[Job]:
    """All jobs and their dependencies, each once, dependencies first."""
    order: list[Job] = []
    seen: set[str] = set()

    def visit(job: Job) -> None:
        if job.key in seen:
            return
        for dep in job.deps.values():
            visit(dep)
        seen.add(job.key)
        order.append(job)

    for job in jobs:
        visit(job)
    return order
