"""Replacing a table's files together: `python -m repro.table` renders a table, its metrics,
figures and curves into a staging folder and swaps them in at the end, so that a kill while
rendering leaves the previous complete set (README, "Outputs")."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

STAGING = ".staging-"   # out_dir/.staging-<stem>-<pid>: a table's files while they are rendered


def table_files(out_dir: Path, stem: str) -> list[Path]:
    """Every file of table `stem` under `out_dir`: stem.{md,tex,csv,json}, metrics/stem.json,
    figures/stem_*, curves/stem_* (what one run of `python -m repro.table` writes)."""
    out_dir = Path(out_dir)
    found = [*out_dir.glob(f"{stem}.*"), *out_dir.glob(f"metrics/{stem}.json"),
             *out_dir.glob(f"figures/{stem}_*"), *out_dir.glob(f"curves/{stem}_*")]
    return sorted(p for p in found if p.is_file())


@contextlib.contextmanager
def staged(out_dir: Path, stem: str) -> Iterator[Path]:
    """A folder to render table `stem` into; on success its files replace the table's files in
    `out_dir` together (renames on one filesystem, a few milliseconds) and the table's files
    it did not write (a removed row's figure) go. A failure or a kill while rendering, the
    slow part, leaves `out_dir` with the previous complete set; the staging folder of a killed
    run is removed by the next run of that table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{STAGING}{stem}-*"):     # left by a killed run
        if old.is_dir() and not _alive(old.name.rsplit("-", 1)[-1]):
            shutil.rmtree(old, ignore_errors=True)
    stage = out_dir / f"{STAGING}{stem}-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
        new = {p.relative_to(stage) for p in table_files(stage, stem)}
        for rel in sorted(new):
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, out_dir / rel)
        for old in table_files(out_dir, stem):
            if old.relative_to(out_dir) not in new:
                old.unlink()
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
