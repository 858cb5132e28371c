"""Errors that reach the user as one line and exit status 2 (bad input, missing data)."""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator


class UserError(Exception):
    """Bad input: the message says what is wrong and how to fix it, in one line.

    Raised before any job starts; `python -m repro.table` prints it and exits 2.
    """


# --- missing inputs: fatal in a run, listed in a dry run ----------------------------------
# A dry run (python -m repro.table --dry-run) prices a table before its datasets and
# weights are in place, so the checks for absent files report to it instead of raising.
# Everything else (a bad setting, an unknown name) stays a UserError in both modes.

_collected: ContextVar[list[str] | None] = ContextVar("missing_inputs", default=None)


def missing(message: str) -> None:
    """A required input file or folder is absent: UserError(message), or, inside
    `collect_missing()`, record the message and let the caller go on with the configured path."""
    found = _collected.get()
    if found is None:
        raise UserError(message)
    if message not in found:
        found.append(message)


@contextmanager
def collect_missing() -> Iterator[list[str]]:
    """Within this block `missing` records instead of raising; yields the list of messages."""
    found: list[str] = []
    token = _collected.set(found)
    try:
        yield found
    finally:
        _collected.reset(token)
