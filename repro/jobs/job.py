"""A job: a frozen, fully resolved config, its kind, and the jobs it reads from.

A job's key is a hash of (kind, config, dependency keys, CODE_VERSION): the same
experiment always lands in the same `jobs/<key>/` folder, so a finished job is never
recomputed and an interrupted one resumes where it stopped. Provenance (git commit,
host, wall time) is recorded in the folder but is not part of the key: a new commit
that does not change what a job computes must not invalidate the store. Bump
CODE_VERSION when a change alters results.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

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
