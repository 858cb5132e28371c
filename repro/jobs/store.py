"""The job store: one self-describing, checksummed folder per job under `jobs/<key>/`.

    jobs/<key>/
      manifest.json   sha256, size and write order of every file below (repro.io keeps it)
      job.json        kind, name, resolved config, dependency keys
      inputs.json     the keys and output digests of the dependencies this run read
      status.json     state (pending | running | done | failed | damaged), times, host
      log.txt         everything the job printed
      lock            held while a process runs the job (repro.jobs.lock)
      result.json     written last, atomically
      ...             checkpoints, samples: whatever the job body writes (atomically)

Integrity rules (what `done` means, what `scrub` repairs):

- A job is done when result.json parses and every file its manifest lists is present with
  the recorded size and sha256, and every dependency it read (inputs.json) is itself done
  with the same output digest as when this job read it.
- Output digest of a job: the sha256 of its output files and of its result without the
  provenance block (times, host, commit). Resume state (`checkpoint*`) and the descriptive
  files (job.json, inputs.json) are not outputs. So a dependency that is recomputed and
  reproduces its outputs bit for bit leaves its dependents done (they read the same bytes);
  one whose outputs differ in any byte makes every job that read it recompute, and so on
  down the graph. Keys never change.
- Damage found when the job next runs (`scrub`, under the job's lock):
    * job.json: rewritten from the plan's job (it is a function of the key);
    * resume state of a job whose result is intact: discarded, the job stays done;
    * anything else: the job goes back to its last resume point before the damage: the
      damaged files and every file written after the last `checkpoint*` written before the
      earliest damaged one are deleted, so the job resumes from that checkpoint, or starts
      again if there is none. (A checkpoint written after a damaged snapshot would resume
      past it and never rewrite it; a body that skips work whose output file it finds, as
      restoration sampling does per mask count, may tie several files to one unit of work:
      only a checkpoint marks a point from which every later file is rewritten.);
    * files the manifest does not list (a foreign or legacy file, a writer that bypassed
      repro.io) are deleted; a folder without a readable manifest is recomputed;
    * temp files of a killed writer (`.*.tmp`) are removed.

Why one module of ~320 lines: a job folder's layout, what "done" means (result plus verified
checksums plus unchanged inputs) and the repair of a damaged folder are one contract; the
runner and `repro.status` both read it, and splitting it would let the three drift apart.
"""
from __future__ import annotations

import fnmatch
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from repro.io import (MANIFEST, atomic_write_json, file_sha256, new_manifest, read_manifest, sha256_bytes, tracked,
                      write_manifest)
from repro.jobs.job import Job, canonical_json

DEFAULT_ROOT = Path("jobs")
RESULT, JOB, INPUTS = "result.json", "job.json", "inputs.json"
RESUME_STATE = ("checkpoint*",)      # files only the job itself reads, to resume
STALE_TMP_S = 600                    # bookkeeping temp files older than this are orphans

def _resume_state(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, pat) for pat in RESUME_STATE)


def _job_doc(job: Job) -> dict[str, Any]:
    return {"kind": job.kind, "name": job.name, "key": job.key, "config": job.config,
            "deps": {role: dep.key for role, dep in job.deps.items()}}


def _json_bytes(obj: Any) -> bytes:
    """What repro.io.atomic_write_json writes for `obj`."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


class JobDir:
    """The folder of one job; the only handle a job body gets on the file system."""

    def __init__(self, root: Path, key: str):
        self.root = Path(root)
        self.path = self.root / key
        self.key = key

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ checking

    def _entry_state(self, rel: str, entry: dict[str, Any]) -> str:
        """ok | prior (a killed rewrite left the previous version) | absent (a killed first write)
        | damaged | missing"""
        path = self.path / rel
        sha = file_sha256(path)
        if sha is None:
            return "absent" if entry.get("pending") and entry.get("prior") is None else "missing"
        size = path.stat().st_size
        if (sha, size) == (entry.get("sha256"), entry.get("size")):
            return "ok"
        prior = entry.get("prior") if entry.get("pending") else None
        if prior and (sha, size) == (prior.get("sha256"), prior.get("size")):
            return "prior"
        return "damaged"

    def damage(self) -> list[str]:
        """What is wrong with this job's own files (empty when intact; an unfinished job is not damage)."""
        if not self.path.is_dir():
            return []
        try:
            files = read_manifest(self.path)["files"]
        except ValueError as err:
            return [str(err)] if any(self.path.iterdir()) else []
        problems = [f"{rel}: {state}" for rel, entry in sorted(files.items())
                    if (state := self._entry_state(rel, entry)) in ("damaged", "missing")]
        if (self.path / RESULT).exists():
            if RESULT not in files:
                problems.append(f"{RESULT}: not in the manifest")
            elif self._result() is None:
                problems.append(f"{RESULT}: not valid JSON")
        return problems

    def problems(self) -> list[str]:
        """Why this job is not done (empty when it is): damage, no result, inputs changed."""
        try:
            files = read_manifest(self.path)["files"]
        except ValueError:
            return self.damage() or ["no manifest (not started, or written before checksums were kept)"]
        if RESULT not in files and not (self.path / RESULT).exists():
            return ["no result yet"]    # unfinished: nothing to hash
        problems = self.damage()
        if problems:
            return problems
        if any(self._entry_state(rel, e) == "absent" for rel, e in files.items()):
            return ["a file write of this job never completed"]
        return self._input_problems()

    def _input_problems(self) -> list[str]:
        inputs = self.inputs()
        if inputs is None:
            return []
        problems = []
        for role, rec in sorted(inputs.items()):
            dep = JobDir(self.root, rec["key"])
            if not dep.done:
                problems.append(f"input {role} ({rec['key']}) is not done")
            elif dep.digest() != rec["digest"]:
                problems.append(f"input {role} ({rec['key']}) changed since this job read it")
        return problems

    @property
    def done(self) -> bool:
        return not self.problems()

    def digest(self) -> str:
        """Output digest (module docstring): what a dependent read from this job."""
        files = read_manifest(self.path)["files"]
        outputs = {rel: file_sha256(self.path / rel) for rel in sorted(files)
                   if rel not in (RESULT, JOB, INPUTS) and not _resume_state(rel)}
        result = {k: v for k, v in (self._result() or {}).items() if k != "provenance"}
        return sha256_bytes(canonical_json({"files": outputs, "result": result}).encode())

    def inputs(self) -> dict[str, dict[str, str]] | None:
        """The dependencies this job's files were computed from (inputs.json), or None."""
        try:
            doc = json.loads((self.path / INPUTS).read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and all(isinstance(v, dict) and "key" in v for v in doc.values()) else None

    # ------------------------------------------------------------------ reading

    def _result(self) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.path / RESULT).read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def result(self) -> dict[str, Any]:
        doc = self._result()
        if doc is None:
            raise RuntimeError(f"{self.path / RESULT} is missing or damaged: run the job again")
        return doc

    def _status_file(self) -> dict[str, Any]:
        try:
            st = json.loads((self.path / "status.json").read_text())
            return st if isinstance(st, dict) else {"status_problem": "status.json is not an object"}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {"status_problem": "status.json is unreadable"}

    def status(self) -> dict[str, Any]:
        """status.json as a dict (never raises); `state` is done / damaged from the files themselves."""
        st = self._status_file()
        if self.done:
            return {**st, "state": "done"}
        if st.get("state") == "done" or (self.path / RESULT).exists():     # finished once: what is wrong now
            damage = self.damage() or self._input_problems() or ["result.json missing"]
            return {**st, "state": "damaged", "damage": damage}
        return st if "state" in st else {**st, "state": "pending"}

    def set_status(self, state: str, **extra: Any) -> None:
        old = {k: v for k, v in self._status_file().items() if k != "status_problem"}
        old.update(state=state, host=socket.gethostname(), pid=os.getpid(), updated=time.time(), **extra)
        atomic_write_json(self.path / "status.json", old)

    def log_tail(self, n: int = 10) -> list[str]:
        p = self.path / "log.txt"
        return p.read_text(errors="replace").splitlines()[-n:] if p.exists() else []

    # ------------------------------------------------------------------ repairing (under the job's lock)

    def scrub(self) -> list[str]:
        """Repair the folder as the module docstring says; returns one line per action taken.

        Only the holder of the job's lock may call this: it deletes files.
        """
        actions = []
        if not self.path.is_dir():
            return actions
        now = time.time()
        for tmp in self.path.rglob(".*.tmp"):
            target = tmp.name[1:].rsplit(".", 2)[0]
            if tracked(target) or now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink(missing_ok=True)
                actions.append(f"removed {tmp.relative_to(self.path)} (temp file of a killed writer)")
        try:
            doc = read_manifest(self.path)
        except ValueError as err:
            doc = {"files": {}, "seq": 0}
            if (self.path / MANIFEST).exists():
                actions.append(f"{err}: every file of the job is recomputed")
            write_manifest(self.path, doc)
        files = doc["files"]
        bad: dict[str, str] = {}
        for rel, entry in list(files.items()):
            state = self._entry_state(rel, entry)
            if state == "ok":
                files[rel] = {k: v for k, v in entry.items() if k not in ("pending", "prior")}
            elif state == "prior":
                files[rel] = {**entry["prior"], "seq": entry["seq"]}
            elif state == "absent":
                del files[rel]
            else:
                bad[rel] = state
        if RESULT in files and RESULT not in bad and self._result() is None:
            bad[RESULT] = "not valid JSON"
        on_disk = {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()}
        for rel in sorted(on_disk - set(files)):
            if tracked(rel):
                (self.path / rel).unlink()
                actions.append(f"removed {rel}: not in the manifest (not written through repro.io)")
        if JOB in bad:      # rewritten by JobStore.prepare from the plan
            actions.append(f"{JOB}: {bad.pop(JOB)}; rewritten from the plan")
            self._drop(files, JOB)
        if bad and RESULT in files and RESULT not in bad and all(_resume_state(r) for r in bad):
            for rel in sorted(bad):
                actions.append(f"{rel}: {bad[rel]}; discarded (resume state of a finished job)")
                self._drop(files, rel)
        elif bad:
            first = min(files[rel]["seq"] for rel in bad)
            resume = [e["seq"] for rel, e in files.items()
                      if _resume_state(rel) and rel not in bad and e["seq"] < first]
            cut = max(resume, default=0) + 1
            later = sorted((rel for rel in files if files[rel]["seq"] >= cut and rel not in bad and rel != JOB),
                           key=lambda r: files[r]["seq"])
            actions.append("; ".join(f"{rel}: {state}" for rel, state in sorted(bad.items()))
                           + (f"; discarded with what was written after it: {', '.join(later)}" if later
                              else "; discarded"))
            for rel in [*bad, *later]:
                self._drop(files, rel)
        write_manifest(self.path, doc)
        return actions

    def _drop(self, files: dict[str, Any], rel: str) -> None:
        (self.path / rel).unlink(missing_ok=True)
        files.pop(rel, None)

    def record_inputs(self, inputs: dict[str, dict[str, str]]) -> bool:
        """Write inputs.json before the body runs; if the files here were computed from other
        inputs, delete them first (the job starts again). True if that happened."""
        old = self.inputs()
        if old == inputs:
            return False
        changed = old is not None
        if changed:
            doc = read_manifest(self.path)
            for rel in [r for r in doc["files"] if r != JOB]:
                self._drop(doc["files"], rel)
            write_manifest(self.path, doc)
        atomic_write_json(self.path / INPUTS, inputs)
        return changed


class JobStore:
    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT):
        self.root = Path(root)

    def dir(self, job: Job) -> JobDir:
        return JobDir(self.root, job.key)

    def prepare(self, job: Job) -> JobDir:
        """Create the folder, its manifest, and describe the job in it (idempotent; repairs job.json)."""
        d = self.dir(job)
        d.path.mkdir(parents=True, exist_ok=True)
        new_manifest(d.path)
        want = _job_doc(job)
        try:
            entry = read_manifest(d.path)["files"].get(JOB)
        except ValueError:
            entry = None
        have = file_sha256(d / JOB)
        if entry is None or have != entry.get("sha256") or not _same_job(d / JOB, want):
            atomic_write_json(d / JOB, want)
        return d


def _same_job(path: Path, want: dict[str, Any]) -> bool:
    """Whether job.json describes `want` (the name is a label and may differ between plans)."""
    try:
        have = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    same = lambda doc: json.loads(_json_bytes({k: v for k, v in doc.items() if k != "name"}))  # noqa: E731
    return isinstance(have, dict) and same(have) == same(want)
