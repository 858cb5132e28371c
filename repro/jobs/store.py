"""The job store: one self-describing folder per job under `jobs/<key>/`.

    jobs/<key>/
      job.json        kind, name, resolved config, dependency keys
      status.json     state (pending | running | done | failed), times, host, git commit
      log.txt         everything the job printed
      result.json     written last, atomically: its presence means "done"
      ...             checkpoints, samples: whatever the job body writes (atomically)
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from repro.io import atomic_write_json
from repro.jobs.job import Job

DEFAULT_ROOT = Path("jobs")


class JobDir:
    """The folder of one job; the only handle a job body gets on the file system."""

    def __init__(self, root: Path, key: str):
        self.path = Path(root) / key
        self.key = key

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def done(self) -> bool:
        return (self.path / "result.json").exists()

    def result(self) -> dict[str, Any]:
        return json.loads((self.path / "result.json").read_text())

    def status(self) -> dict[str, Any]:
        p = self.path / "status.json"
        if self.done:
            return {**(json.loads(p.read_text()) if p.exists() else {}), "state": "done"}
        return json.loads(p.read_text()) if p.exists() else {"state": "pending"}

    def set_status(self, state: str, **extra: Any) -> None:
        old = json.loads((self.path / "status.json").read_text()) if (self.path / "status.json").exists() else {}
        old.update(state=state, host=socket.gethostname(), pid=os.getpid(), updated=time.time(), **extra)
        atomic_write_json(self.path / "status.json", old)

    def log_tail(self, n: int = 10) -> list[str]:
        p = self.path / "log.txt"
        return p.read_text(errors="replace").splitlines()[-n:] if p.exists() else []


class JobStore:
    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT):
        self.root = Path(root)

    def dir(self, job: Job) -> JobDir:
        return JobDir(self.root, job.key)

    def prepare(self, job: Job) -> JobDir:
        """Create the folder and describe the job in it (idempotent)."""
        d = self.dir(job)
        d.path.mkdir(parents=True, exist_ok=True)
        if not (d / "job.json").exists():
            atomic_write_json(d / "job.json", {
                "kind": job.kind, "name": job.name, "key": job.key, "config": job.config,
                "deps": {role: dep.key for role, dep in job.deps.items()},
            })
        return d
