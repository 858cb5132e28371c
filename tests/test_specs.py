"""The specs in benchmarks/: each table defined once, shared blocks as hydra config groups.

A table's columns, metric directions, print formats, the paper's numbers and claims live in
the `table:` block of its spec; the report layer reads them from there (repro.report.paper),
the pipeline reads the same block composed with hydra. Both must see one definition.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from repro.config import PROFILES, available_tables, compose, spec_name
from repro.report.paper import BENCHMARKS, column_names, paper_numbers, table_spec

MASKED_IMAGE = yaml.safe_load((BENCHMARKS / "task" / "masked_image.yaml").read_text())


@pytest.mark.parametrize("table", available_tables())
@pytest.mark.parametrize("profile", PROFILES)
def test_composed_table_block_is_the_report_definition(table, profile):
    cfg = compose(table, profile)
    spec = table_spec(cfg.table.key)
    assert cfg.table.key == spec_name(table) == spec.stem
    assert column_names(cfg.table) == spec.column_names
    for col, composed in zip(spec.columns, cfg.table.columns):   # direction and format beside each metric
        assert (col.metric, col.direction, col.format) == (composed.metric, composed.direction, composed.format)
    assert list(cfg.table.paper) == spec.row_names


@pytest.mark.parametrize("table", ["1", "2", "3"])
def test_masked_image_task_comes_from_the_config_group(table):
    for profile in PROFILES:
        assert dict(compose(table, profile).task) == MASKED_IMAGE
    # ... and no spec repeats the block: the group file is its only definition.
    copies = [p.name for p in BENCHMARKS.rglob("*.yaml") if "train_patches" in p.read_text() and p.parent.name != "task"]
    assert copies == []


def test_image_label_task_follows_the_spec_classifier():
    cfg = compose("2", "tiny")
    assert cfg.tasks.image_label.name == "image_label"
    assert cfg.tasks.image_label.head == cfg.classifier and cfg.classifier.width == 8   # table2/tiny.yaml's


def test_paper_numbers_are_not_defined_twice():
    """No second copy of the paper's numbers inside the package (the specs hold them)."""
    assert not list(Path(__file__).resolve().parents[1].joinpath("repro").rglob("paper_numbers.yaml"))
    numbers = paper_numbers()
    assert numbers["table1"]["paper"]["MT-Diffusion"] == [0.035, 0.068, 0.099, 0.133]
    assert numbers["figure6"]["claims"] and numbers["overhead"]["claims"]
