"""Outputs never clobbered: a non-default profile writes under tables/<profile>/, and a table's
files are replaced together (rendered into a staging folder, swapped in at the end)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from repro.cli import out_option, profile_option, profile_out, run
from repro.report.staging import STAGING, staged, table_files

REPO = Path(__file__).resolve().parents[1]
OLD = {"table1.md": "old md", "table1.json": "{}", "metrics/table1.json": "{}",
       "figures/table1_SDEdit_samples.png": "old grid", "curves/table1_loss.csv": "old curve"}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _contents(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in table_files(root, "table1")}


@pytest.mark.parametrize("profile, given, expected", [
    ("smoke", None, "tables"), ("tiny", None, "tables/tiny"), ("paper", None, "tables/paper"),
    ("tiny", "elsewhere", "elsewhere"), ("tiny", "tables", "tables")])
def test_a_profile_other_than_the_default_writes_elsewhere(profile, given, expected):
    seen = []

    @click.command()
    @profile_option
    @out_option
    def main(profile: str, out_dir: Path) -> None:
        seen.append(profile_out(out_dir, profile))

    assert run(main, "t", ["--profile", profile, *(["--out", given] if given else [])]) == 0
    assert seen == [Path(expected)]


def test_a_failure_mid_render_keeps_the_previous_complete_set(tmp_path):
    _write(tmp_path, OLD)
    with pytest.raises(RuntimeError, match="mid-render"), staged(tmp_path, "table1") as stage:
        _write(stage, {"table1.md": "new md", "metrics/table1.json": "[1]"})
        raise RuntimeError("mid-render")
    assert _contents(tmp_path) == OLD
    assert not list(tmp_path.glob(f"{STAGING}*"))


def test_a_finished_render_replaces_the_whole_set_and_drops_stale_files(tmp_path):
    _write(tmp_path, {**OLD, "table2.md": "another table"})
    new = {"table1.md": "new md", "table1.json": "[1]", "metrics/table1.json": "[2]",
           "figures/table1_MT_Diffusion_samples.png": "new grid"}
    with staged(tmp_path, "table1") as stage:
        _write(stage, new)
        assert _contents(tmp_path) == OLD          # nothing visible until the swap
    assert _contents(tmp_path) == new
    assert (tmp_path / "table2.md").read_text() == "another table"   # other tables untouched
    assert not list(tmp_path.glob(f"{STAGING}*"))


def test_a_kill_mid_render_keeps_the_previous_set_and_the_next_run_cleans_up(tmp_path):
    _write(tmp_path, OLD)
    script = ("import os, signal, sys; from pathlib import Path; from repro.report.staging import staged\n"
              f"with staged(Path({str(tmp_path)!r}), 'table1') as s:\n"
              "    (s / 'table1.md').write_text('half new')\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == -9
    assert _contents(tmp_path) == OLD
    assert len(list(tmp_path.glob(f"{STAGING}table1-*"))) == 1     # the killed run's staging folder
    with staged(tmp_path, "table1") as stage:
        _write(stage, {"table1.md": "new md"})
    assert _contents(tmp_path) == {"table1.md": "new md"}
    assert not list(tmp_path.glob(f"{STAGING}*"))
