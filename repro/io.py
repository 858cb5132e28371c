"""Files on disk: atomic writes, the checksum manifest of a job folder, and the one safe torch loader.

Atomic writes: nothing half-written is ever left behind (write a temp file, fsync, rename).
A writer killed mid-way leaves at most a `.<name>.<random>.tmp` beside the target, which the
job store removes when the job next runs (repro.jobs.store.JobDir.scrub).

Checksums: a job folder (repro.jobs.store) holds `manifest.json`, the sha256, size and write
order of every file written into it. Whenever an atomic writer writes inside such a folder
(the nearest ancestor holding a manifest, at most MANIFEST_DEPTH levels up) it records the
file, so job bodies need no bookkeeping of their own. The record is made in two steps around
the rename, so that a kill at any point leaves a manifest that accepts whatever the file holds:

    1. manifest: {sha256: new, ..., "pending": true, "prior": the old (sha256, size) or null}
    2. rename the temp file onto the target
    3. manifest: {sha256: new, ...}   (pending and prior dropped)

Files that change while a job runs or that other processes write (status, logs, the lock,
the SLURM record) are bookkeeping, not results: they are not recorded (`tracked`).

Loading: `load_torch` is the only way the project reads a torch file. It unpickles with
`weights_only=True`, so a file whose pickle names anything but tensors and plain containers
(which is how a crafted checkpoint runs code) is refused with a UserError naming the file.
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from repro.errors import UserError

MANIFEST = "manifest.json"
MANIFEST_DEPTH = 4          # job files sit at most this many folders below the manifest (snapshots/...)
# Bookkeeping files of a job folder: rewritten while the job runs, or by other processes
# (the dispatcher writes status.json and slurm.json of queued jobs); never checksummed.
# Temp files of the atomic writers and NFS's silly-renamed files are never recorded, at any depth.
UNTRACKED = (MANIFEST, "status.json", "slurm.json", "log.txt", "log.rank*.txt", "lock", "lock.*")
ANYWHERE = (".*.tmp", ".nfs*")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# sha256 of files already hashed (or written) by this process, by (path, size, mtime, ctime, inode):
# a file that changes in any way gets a new stat key and is hashed again.
_digests: dict[tuple, str] = {}


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.absolute()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def file_sha256(path: str | os.PathLike) -> str | None:
    """sha256 of the file at `path` (None if absent), read once per version of the file in this process."""
    try:
        key = _stat_key(Path(path))
    except FileNotFoundError:
        return None
    if key not in _digests:
        _digests[key] = sha256_file(path)
    return _digests[key]


def tracked(rel: str) -> bool:
    """Whether a file at `rel` (relative to its job folder) is recorded in the manifest."""
    name = Path(rel).name
    patterns = ANYWHERE + (UNTRACKED if "/" not in rel else ())
    return not any(fnmatch.fnmatch(name, pat) for pat in patterns)


def manifest_root(path: str | os.PathLike) -> Path | None:
    """The job folder `path` lies in (nearest ancestor holding a manifest), or None."""
    parent = Path(path).parent
    for _ in range(MANIFEST_DEPTH):
        if (parent / MANIFEST).is_file():
            return parent
        if parent.parent == parent:
            break
        parent = parent.parent
    return None


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The manifest of job folder `root`; ValueError if it is not a readable manifest."""
    try:
        doc = json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{Path(root) / MANIFEST} is unreadable ({type(err).__name__})") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("files"), dict) and isinstance(doc.get("seq"), int)):
        raise ValueError(f"{Path(root) / MANIFEST} is not a manifest")
    return doc


def write_manifest(root: str | os.PathLike, doc: dict[str, Any]) -> None:
    _replace(Path(root) / MANIFEST, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def new_manifest(root: str | os.PathLike) -> bool:
    """Create an empty manifest in `root` unless one exists (O_EXCL: racing creators agree); True if created."""
    path = Path(root) / MANIFEST
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"files": {}, "seq": 0}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True


def _replace(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and an atomic rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _record(root: Path, rel: str, sha: str, size: int, *, pending: bool) -> None:
    """Step 1 (pending) or 3 of the manifest protocol above, for the file at `rel`."""
    try:
        doc = read_manifest(root)
    except ValueError:      # a damaged manifest: the job is recomputed anyway; keep recording
        doc = {"files": {}, "seq": 0}
    files = doc["files"]
    if pending:
        old, target = files.get(rel), root / rel
        prior = None
        if old is not None and not old.get("pending"):
            prior = {"sha256": old["sha256"], "size": old["size"]}
        elif target.is_file():   # an earlier write was killed mid-way (no scrub since): what is there now
            prior = {"sha256": sha256_file(target), "size": target.stat().st_size}
        doc["seq"] += 1
        files[rel] = {"sha256": sha, "size": size, "seq": doc["seq"], "pending": True, "prior": prior}
    else:
        files[rel] = {k: v for k, v in files.get(rel, {"seq": doc["seq"]}).items() if k not in ("pending", "prior")}
        files[rel].update(sha256=sha, size=size)
    write_manifest(root, doc)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; inside a job folder, record its checksum in the manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = manifest_root(path)
    rel = path.relative_to(root).as_posix() if root is not None else None
    if rel is not None and tracked(rel):
        sha = sha256_bytes(data)
        _record(root, rel, sha, len(data), pending=True)
        _replace(path, data)
        _digests[_stat_key(path)] = sha     # what was just written and fsynced: no need to read it back
        _record(root, rel, sha, len(data), pending=False)
    else:
        _replace(path, data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_save_torch(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def load_torch(path: str | os.PathLike, what: str = "torch file") -> Any:
    """Read a torch file holding only tensors and plain containers (`weights_only=True`), on the CPU.

    UserError, naming the file, when it is missing, unreadable, or its pickle asks for any
    other object (a crafted file runs code exactly that way: nothing of it is executed here).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise UserError(f"cannot read {what} {path}: damaged or not a torch file ({str(err).splitlines()[0]})") \
                from None
        found = re.search(r"unsupported (?:global:? )?(?:GLOBAL [\w.]+|operand \d+)", str(err), re.IGNORECASE)
        raise UserError(
            f"refused to load {what} {path}: it is not a plain state dict "
            f"({found.group(0) if found else 'objects other than tensors and containers'}) and unpickling it "
            f"could run code; re-save it as a state dict (torch.save(model.state_dict(), ...)) or as .safetensors"
        ) from None
    except Exception as err:  # zip, storage and EOF errors all mean "damaged or not a torch file"
        raise UserError(f"cannot read {what} {path}: damaged or not a torch file "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
