"""What every command of the suite shares: its options and how it ends.

Options: `--profile`, `--cluster`, `--store`, `--out` are defined here once, so that
`python -m repro.table`, `.status`, `.figure`, `.features`, `.data` and `.report` spell and
explain them alike (`table_options` is the block a table-like command takes).

Exit: 2 with one line on bad input, 1 when a job failed (its log says why), 130 on Ctrl-C,
0 otherwise.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, TypeVar

import click

from repro.config import BENCHMARKS, PROFILES
from repro.errors import UserError
from repro.jobs.state import JobFailed

F = TypeVar("F", bound=Callable)

DEFAULT_PROFILE = "smoke"
DEFAULT_CLUSTER = "local"
DEFAULT_STORE = Path("jobs")
DEFAULT_OUT = Path("tables")


def available_clusters() -> list[str]:
    """The --cluster choices: benchmarks/cluster/<name>.yaml."""
    return sorted(p.stem for p in (BENCHMARKS / "cluster").glob("*.yaml"))


def profile_option(f: F) -> F:
    return click.option("--profile", default=DEFAULT_PROFILE, show_default=True,
                        help=f"{' | '.join(PROFILES)}: the scale (benchmarks/profile/<name>.yaml)")(f)


def cluster_option(f: F) -> F:
    return click.option("--cluster", default=DEFAULT_CLUSTER, show_default=True,
                        help="local (this process) | debug (submitit in-process) | slurm (sbatch; "
                             "benchmarks/cluster/slurm.yaml)")(f)


def store_option(f: F) -> F:
    return click.option("--store", type=click.Path(path_type=Path), default=DEFAULT_STORE, show_default=True,
                        help="job store folder (one folder per job, reused across runs)")(f)


def out_option(f: F) -> F:
    # `--tables` is the same folder seen from the results page (python -m repro.report --tables).
    return click.option("--out", "--tables", "out_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT,
                        show_default=True, help="tables folder: where tables, figures and the results page go")(f)


def profile_out(out_dir: Path, profile: str) -> Path:
    """Where a table-like command writes: `--out` when given; else tables/ for the default
    profile and tables/<profile>/ for any other, so that a tiny or paper run never overwrites
    the committed smoke results."""
    ctx = click.get_current_context(silent=True)
    given = ctx is not None and ctx.get_parameter_source("out_dir") not in (None, click.core.ParameterSource.DEFAULT)
    return out_dir if given or profile == DEFAULT_PROFILE else out_dir / profile


def table_options(f: F) -> F:
    """--profile, --cluster, --store and --out: what a command that dispatches a table's jobs takes."""
    for option in (out_option, store_option, cluster_option, profile_option):
        f = option(f)
    return f


def run(command: click.Command, prog_name: str, argv: list[str] | None = None) -> int:
    """Run a click command and turn its ending into the suite's exit status."""
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except click.UsageError as err:
        print(f"error: {err.format_message()} (see --help)", file=sys.stderr)
        return 2
    except click.ClickException as err:   # e.g. an unreadable file argument
        print(f"error: {err.format_message()}", file=sys.stderr)
        return 2
    except JobFailed as err:   # already logged in the job's folder; say where, in one line
        print(f"failed: {err}", file=sys.stderr)
        return 1
    except click.Abort:
        return 130
    return 0
