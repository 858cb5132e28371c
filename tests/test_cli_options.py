"""The options every command shares (--profile, --cluster, --store, --out) are one definition:
same names, defaults and help text wherever a command takes them, and the old spellings that
the Makefile and dvc.yaml use still parse."""
from __future__ import annotations

from pathlib import Path

import click
import pytest

from repro.cli import available_clusters
from repro.config import PROFILES
from repro.data.__main__ import main as data_main
from repro.features import main as features_main
from repro.figure import main as figure_main
from repro.report.__main__ import main as report_main
from repro.status import main as status_main
from repro.table import main as table_main

COMMANDS = {"table": table_main, "status": status_main, "figure": figure_main, "features": features_main,
            "data": data_main, "report": report_main}
SHARED = ("profile", "cluster", "store", "out_dir")
# Which command takes which shared option: a command losing one is a change of its interface.
TAKES = {"table": SHARED, "figure": SHARED, "status": ("profile", "cluster", "store"),
         "features": ("profile", "store", "out_dir"), "data": ("profile",), "report": ("out_dir",)}


def options(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name in SHARED}


@pytest.mark.parametrize("name", SHARED)
def test_a_shared_option_is_spelled_and_explained_alike_everywhere(name):
    found = {cmd: options(c)[name] for cmd, c in COMMANDS.items() if name in options(c)}
    assert set(found) == {cmd for cmd, names in TAKES.items() if name in names}
    described = {(tuple(o.opts), o.default, o.help, o.show_default) for o in found.values()}
    assert len(described) == 1, described
    (_, _, help_text, _), = described
    assert help_text


def test_the_help_names_what_can_be_chosen():
    profile = options(table_main)["profile"].help
    assert all(p in profile for p in PROFILES)
    cluster = options(table_main)["cluster"].help
    assert available_clusters() == ["debug", "local", "slurm"]
    assert all(c in cluster for c in available_clusters())


def test_defaults_and_the_tables_spelling_of_out_parse(tmp_path):
    ctx = table_main.make_context("table", ["1"])
    assert (ctx.params["profile"], ctx.params["cluster"], ctx.params["store"], ctx.params["out_dir"]) == \
        ("smoke", "local", Path("jobs"), Path("tables"))
    # dvc.yaml and the Makefile call `python -m repro.report --tables tables`.
    assert report_main.make_context("report", ["--tables", str(tmp_path)]).params["out_dir"] == tmp_path
    assert report_main.make_context("report", ["--out", str(tmp_path)]).params["out_dir"] == tmp_path
