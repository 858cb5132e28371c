"""Provenance of a rendered number: which code, config, data and feature network produced it.

A table's provenance is one dict of the fields below (true for every row) plus, optionally,
`rows: {row: {field: value}}` overriding fields per row (e.g. a different sample count).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

# What the pipeline itself writes into the checkout (tables, DVC's lock): a run that has
# rewritten them has not changed the code, so they do not make a commit "-dirty".
OUTPUT_PATHS = ("tables", "dvc.lock")

FIELDS = ("profile", "dataset", "n_samples", "config_key", "git_commit", "wall_time_s", "feature_extractor")


def git_commit(path: str | os.PathLike | None = None) -> str:
    """Short hash of HEAD of the repository holding `path` (default: this package), with
    "-dirty" when tracked files other than the pipeline's outputs (OUTPUT_PATHS) differ from
    HEAD; "unknown" outside git or before a commit."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        # --no-optional-locks: reading the state must never take the index lock that a
        # concurrent `git add`/`git commit` in the same checkout needs.
        return subprocess.run(
            ["git", "--no-optional-locks", "-C", str(where), *args],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                    *(f":(top,exclude){p}" for p in OUTPUT_PATHS))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def make_provenance(
    *,
    profile: str,
    dataset: str,
    n_samples: int | None,
    feature_extractor: str,
    config_key: str | None = None,
    wall_time_s: float | None = None,
    git_commit: str | None = None,
    rows: dict[str, dict[str, Any]] | None = None,
    readings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A table provenance dict; `git_commit` defaults to the current checkout's. `readings`:
    the paper's open readings the table was computed under (repro.plan.readings), table-wide."""
    out: dict[str, Any] = {
        "profile": profile,
        "dataset": dataset,
        "n_samples": n_samples,
        "config_key": config_key,
        "git_commit": git_commit if git_commit is not None else _current_commit(),
        "wall_time_s": wall_time_s,
        "feature_extractor": feature_extractor,
    }
    if rows:
        unknown = {k for r in rows.values() for k in r} - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown provenance fields {sorted(unknown)}; known: {FIELDS}")
        out["rows"] = {name: dict(fields) for name, fields in rows.items()}
    if readings is not None:
        out["readings"] = dict(readings)
    return out


def _current_commit() -> str:
    return git_commit()


def row_provenance(provenance: dict[str, Any], row: str) -> dict[str, Any]:
    """The provenance of one row: the table-wide fields updated with the row's own."""
    merged = {k: provenance.get(k) for k in FIELDS}
    merged.update(provenance.get("rows", {}).get(row, {}))
    return merged


def table_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    """The table-wide fields only (without per-row overrides), with the readings where given."""
    out = {k: provenance.get(k) for k in FIELDS}
    if "readings" in provenance:
        out["readings"] = provenance["readings"]
    return out
