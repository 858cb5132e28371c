"""One process computes a job at a time: a lock file in the job's folder, safe on shared filesystems.

SLURM clusters share the job store over NFS or Lustre, where flock/fcntl locks are not to be
trusted, so the lock is a file:

- taken by creating `jobs/<key>/lock` with O_CREAT|O_EXCL (atomic on local filesystems and
  NFSv3+), which then holds {host, pid, process start time, start time, token, heartbeat};
- kept alive by a thread of the holder that rewrites it (heartbeat + 1) every `heartbeat_s`;
- stale, and taken over, when its holder is on this host (and pid namespace) and its process
  is gone (or its pid now belongs to a younger process), when it is an earlier run of this
  same requeued SLURM job, or, for a holder on another host, when the lock's contents have
  not changed for `stale_after_s` as timed by the waiter's own clock (so clock skew between
  nodes does not matter);
- broken by exactly one waiter: breaking first creates `lock.break.<token>` with O_EXCL, so
  two waiters that find the same stale lock cannot both remove it (the second would remove
  the first one's fresh lock).

A holder that finds its lock gone or replaced (it was judged stale while alive: a frozen node)
marks itself `lost`; the runner then refuses to publish the result, so two processes never
both write a job's files as owners.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from repro.io import atomic_write_json

HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0      # ten missed heartbeats


def _proc_start(pid: int) -> str | None:
    """Start time of process `pid` in clock ticks since boot (Linux), to tell pid reuse apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_namespace() -> str | None:
    """This process's pid namespace: pids are comparable only inside one (containers on one host)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _slurm_run() -> tuple[str, str] | None:
    """(SLURM job id, restart count) of this process, if SLURM started it."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{task}" if task and os.environ.get("SLURM_ARRAY_JOB_ID") else job
    return job, os.environ.get("SLURM_RESTART_COUNT", "0")


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _proc_start(pid)
    return start is None or now is None or now == start


class JobLock:
    """The lock of one job folder (context manager: acquire, waiting as long as it takes; release)."""

    def __init__(self, path: str | os.PathLike, *, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S, poll_s: float = 0.5,
                 on_wait: Callable[[dict[str, Any]], None] | None = None):
        self.path = Path(path)
        self.heartbeat_s, self.stale_after_s, self.poll_s = heartbeat_s, stale_after_s, poll_s
        self.on_wait = on_wait
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.token = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beats = 0

    # ---------------------------------------------------------------- the holder

    def _doc(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "proc_start": _proc_start(self.pid), "pid_ns": _pid_namespace(),
                "slurm": _slurm_run(), "token": self.token, "started": self._started, "heartbeat": self._beats,
                "beat_time": time.time()}

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        self._started = time.time()
        with os.fdopen(fd, "w") as f:
            json.dump(self._doc(), f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if self.holder().get("token") != self.token:
                self.lost = True
                return
            self._beats += 1
            atomic_write_json(self.path, self._doc())

    def acquire(self) -> "JobLock":
        waited = False
        seen: tuple[bytes, float] | None = None     # (contents, when first seen unchanged) of a foreign lock
        while not self._try_create():
            raw = self._read()
            if raw is None:
                continue                            # released just now: try again at once
            if seen is None or seen[0] != raw:
                seen = (raw, time.monotonic())
            holder = self._parse(raw)
            if self._stale(holder, time.monotonic() - seen[1]):
                self._break(raw, holder)
                continue
            if not waited and self.on_wait is not None:
                self.on_wait(holder)
            waited = True
            time.sleep(self.poll_s)
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.lost and self.holder().get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def held(self) -> bool:
        """Whether this process still owns the lock (checked on disk)."""
        self.lost = self.lost or self.holder().get("token") != self.token
        return not self.lost

    def __enter__(self) -> "JobLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # ---------------------------------------------------------------- waiters

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(raw)
        except ValueError:      # created, not yet written (or its writer died in between)
            return {}
        return doc if isinstance(doc, dict) else {}

    def holder(self) -> dict[str, Any]:
        raw = self._read()
        return self._parse(raw) if raw is not None else {}

    def _stale(self, holder: dict[str, Any], unchanged_s: float) -> bool:
        ours, theirs = _slurm_run(), holder.get("slurm")
        if ours and theirs and theirs[0] == ours[0] and theirs[1] != ours[1]:
            return True     # an earlier run of this same (requeued) SLURM job: SLURM runs one at a time
        if (holder.get("host") == self.host and holder.get("pid_ns") == _pid_namespace()
                and isinstance(holder.get("pid"), int)):
            return not _alive(holder["pid"], holder.get("proc_start"))
        return unchanged_s > self.stale_after_s

    def _break(self, raw: bytes, holder: dict[str, Any]) -> None:
        """Remove the stale lock whose contents are `raw`, unless another waiter is doing so."""
        breaker = self.path.with_name(f"{self.path.name}.break.{holder.get('token') or abs(hash(raw))}")
        try:
            fd = os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if time.time() - breaker.stat().st_mtime > self.stale_after_s:   # its breaker died too
                breaker.unlink(missing_ok=True)
            time.sleep(self.poll_s)
            return
        os.close(fd)
        try:
            if self._read() == raw:     # nobody else can replace a stale lock while we hold its breaker
                self.path.unlink(missing_ok=True)
                print(f"took over the stale lock {self.path} of {holder.get('host', '?')} "
                      f"pid {holder.get('pid', '?')}", flush=True)
        finally:
            breaker.unlink(missing_ok=True)
