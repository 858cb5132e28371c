"""How every command of the suite ends: exit 2 with one line on bad input, 1 when a job
failed (its log says why), 130 on Ctrl-C, 0 otherwise."""
from __future__ import annotations

import sys

import click

from repro.config import BENCHMARKS
from repro.errors import UserError
from repro.jobs.state import JobFailed


def available_clusters() -> list[str]:
    """The --cluster choices: benchmarks/cluster/<name>.yaml."""
    return sorted(p.stem for p in (BENCHMARKS / "cluster").glob("*.yaml"))


def run(command: click.Command, prog_name: str, argv: list[str] | None = None) -> int:
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except click.UsageError as err:
        print(f"error: {err.format_message()} (see --help)", file=sys.stderr)
        return 2
    except JobFailed as err:   # already logged in the job's folder; say where, in one line
        print(f"failed: {err}", file=sys.stderr)
        return 1
    except click.Abort:
        return 130
    return 0
