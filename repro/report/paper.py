"""The numbers the paper reports, loaded from the packaged `paper_numbers.yaml`.

Chen et al., "Diffusion Models for Multi-Modal Generative Modeling" (ICLR 2024), Tables 1-4,
the night2day numbers of Appendix E.1, and the reference numbers used for sanity checks.
The YAML is the single source of the paper's numbers, their metric directions, print
precision and claims; this module only parses and validates it.
"""
from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import yaml

from repro.errors import UserError

DIRECTIONS = ("lower_better", "higher_better")


@dataclass(frozen=True)
class Column:
    """One metric column: `direction` says which way is better, `format` the paper's precision."""

    name: str
    label: str
    metric: str
    direction: str
    format: str

    @property
    def lower_is_better(self) -> bool:
        return self.direction == "lower_better"

    def fmt(self, value: float) -> str:
        return format(value, self.format)


@dataclass(frozen=True)
class TableSpec:
    """One table of the paper: its rows x columns of numbers plus everything needed to render it."""

    id: str
    title: str
    source: str
    dataset: str
    paper_n_samples: int | None
    columns: tuple[Column, ...]
    rows: dict[str, list[float | None]]
    notes: tuple[str, ...] = ()
    legend: tuple[str, ...] = ()
    tex: dict[str, str] = field(default_factory=dict)
    not_comparable: tuple[str, ...] = ()
    cited_rows: tuple[str, ...] = ()
    claims: tuple[dict, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def row_names(self) -> list[str]:
        return list(self.rows)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def stem(self) -> str:
        """File name stem of the rendered outputs: `table1`, `night2day`, ..."""
        return self.id


@functools.cache
def _raw() -> dict[str, Any]:
    text = resources.files("repro.report").joinpath("paper_numbers.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def paper_numbers() -> dict[str, Any]:
    """The whole YAML as a dict (a deep copy: callers may modify it freely)."""
    return copy.deepcopy(_raw())


def table_ids() -> list[str]:
    """Ids of every block that is a table (has rows and columns), in file order."""
    return [k for k, v in _raw().items() if isinstance(v, dict) and "rows" in v and "columns" in v]


def normalize_table_id(table_id: int | str) -> str:
    """Accept 1, "1", "table1" (and names such as "night2day"); return the YAML key."""
    key = str(table_id).strip()
    if re.fullmatch(r"\d+", key):
        key = f"table{key}"
    if key not in table_ids():
        raise UserError(f"unknown table {table_id!r}: choose one of {', '.join(table_ids())}")
    return key


@functools.cache
def table_spec(table_id: int | str) -> TableSpec:
    """Parse and validate one table block of the YAML."""
    key = normalize_table_id(table_id)
    raw = _raw()[key]
    metrics = _raw()["metrics"]
    columns = tuple(Column(**c) for c in raw["columns"])
    for c in columns:
        # The per-table direction is written out for readers of the YAML; it must agree
        # with the metric's own direction or the bold/claims would silently flip.
        if c.metric not in metrics or metrics[c.metric]["direction"] != c.direction:
            raise ValueError(f"{key}/{c.name}: direction {c.direction} disagrees with metric {c.metric}")
    rows = {str(name): list(values) for name, values in raw["rows"].items()}
    for name, values in rows.items():
        if len(values) != len(columns):
            raise ValueError(f"{key}/{name}: {len(values)} values for {len(columns)} columns")
    spec = TableSpec(
        id=key,
        title=raw["title"],
        source=raw.get("source", ""),
        dataset=raw.get("dataset", ""),
        paper_n_samples=raw.get("paper_n_samples"),
        columns=columns,
        rows=rows,
        notes=tuple(raw.get("notes") or ()),
        legend=tuple(raw.get("legend") or ()),
        tex=dict(raw.get("tex") or {}),
        not_comparable=tuple(raw.get("not_comparable") or ()),
        cited_rows=tuple(raw.get("cited_rows") or ()),
        claims=tuple(raw.get("claims") or ()),
    )
    for group in ("tex", "not_comparable", "cited_rows"):
        unknown = set(getattr(spec, group)) - set(rows)
        if unknown:
            raise ValueError(f"{key}.{group} names rows not in the table: {sorted(unknown)}")
    return spec


def paper_table(table_id: int | str) -> pd.DataFrame:
    """The paper's numbers of one table: rows x columns in the paper's order, NaN where empty."""
    spec = table_spec(table_id)
    values = [[np.nan if v is None else float(v) for v in spec.rows[r]] for r in spec.row_names]
    frame = pd.DataFrame(values, index=pd.Index(spec.row_names, name="row"), columns=spec.column_names)
    return frame


def other_claims(block: str) -> list[dict]:
    """Claims of non-table blocks (`figure6`, `overhead`): text, check (null) and reason."""
    if block not in _raw() or "claims" not in _raw()[block]:
        raise UserError(f"no claims block {block!r} in paper_numbers.yaml")
    return copy.deepcopy(_raw()[block]["claims"])
