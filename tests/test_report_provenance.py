"""git_commit against real temporary repositories; provenance dicts."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from repro.report.provenance import FIELDS, git_commit, make_provenance, row_provenance

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org",
                           "-c", "commit.gpgsign=false", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_git_commit_clean_dirty_and_outside(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find an enclosing repo
    repo = tmp_path / "repo"
    repo.mkdir()
    assert git_commit(repo) == "unknown"  # not a repository
    _git(repo, "init", "-q")
    assert git_commit(repo) == "unknown"  # no commit yet
    (repo / "a.txt").write_text("one\n")
    (repo / "tables").mkdir()
    (repo / "tables" / "table1.md").write_text("old\n")
    _git(repo, "add", "a.txt", "tables")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "--short", "HEAD")
    assert git_commit(repo) == head
    (repo / "untracked.txt").write_text("x\n")
    assert git_commit(repo) == head  # untracked files do not change what the code is
    (repo / "tables" / "table1.md").write_text("new\n")
    assert git_commit(repo) == head  # nor do the pipeline's own outputs
    assert git_commit(repo / "tables") == head   # from any folder of the checkout
    (repo / "a.txt").write_text("two\n")
    assert git_commit(repo) == f"{head}-dirty"


def test_make_provenance_and_row_overrides():
    prov = make_provenance(profile="tiny", dataset="embedded", n_samples=32, feature_extractor="fx",
                           config_key="k", wall_time_s=1.5, git_commit="abc1234",
                           rows={"B": {"n_samples": 16, "config_key": "k2"}})
    assert {k: prov[k] for k in FIELDS} == {"profile": "tiny", "dataset": "embedded", "n_samples": 32,
                                            "config_key": "k", "git_commit": "abc1234",
                                            "wall_time_s": 1.5, "feature_extractor": "fx"}
    assert row_provenance(prov, "A")["n_samples"] == 32
    b = row_provenance(prov, "B")
    assert (b["n_samples"], b["config_key"], b["profile"]) == (16, "k2", "tiny")
    with pytest.raises(ValueError):
        make_provenance(profile="tiny", dataset="d", n_samples=1, feature_extractor="f", git_commit="x",
                        rows={"A": {"seed": 3}})


def test_default_commit_is_this_checkout():
    prov = make_provenance(profile="tiny", dataset="d", n_samples=1, feature_extractor="f")
    assert prov["git_commit"] == git_commit()
