"""Declaring what a body reads must not move a job of the committed store.

A body that declares nothing (`reads` absent) is keyed on the plan's whole view of it; a body
that declares `reads(view)` is keyed on `select(view, reads)`. For the bodies whose declaration
was added after the tables in the store were computed (generate), the two must be equal for every
job of every table at the smoke and tiny profiles: the declaration documents and checks what the
body reads, and changes no key. Here the plan is built twice, once with the declarations and
once as if none existed, and every job's key compared.
"""
from __future__ import annotations

import pytest

import repro.plan
from repro.config import compose
from repro.jobs.job import topological
from repro.plan import table_jobs

DECLARED_AFTER_THE_STORE = ("generate",)


def _keys(table: str, profile: str) -> dict[str, str]:
    rows, points, diagnostics = table_jobs(compose(table, profile))
    return {j.name: j.key for j in topological([r.job for r in rows] + [p.job for p in points] + diagnostics)}


@pytest.mark.parametrize("profile", ["smoke", "tiny"])
@pytest.mark.parametrize("table", ["2", "3"])
def test_generate_declaration_keeps_every_key(table, profile, monkeypatch):
    declared = _keys(table, profile)
    real = repro.plan.declared_reads
    monkeypatch.setattr(repro.plan, "declared_reads",
                        lambda kind, view: None if kind in DECLARED_AFTER_THE_STORE else real(kind, view))
    undeclared = _keys(table, profile)
    assert any(n.startswith("generate/") for n in declared)
    assert declared == undeclared


def test_the_comparison_sees_a_narrower_declaration(monkeypatch):
    """The check above can fail: a declaration that leaves out a setting of the view moves keys."""
    declared = _keys("2", "tiny")
    real = repro.plan.declared_reads
    monkeypatch.setattr(repro.plan, "declared_reads", lambda kind, view: [
        p for p in real(kind, view) if p != "sample"] if kind == "generate" else real(kind, view))
    narrower = _keys("2", "tiny")
    moved = {n for n in declared if declared[n] != narrower[n]}
    assert moved and all(n.startswith(("generate/", "evaluate/")) for n in moved)
