"""Each table's definition as its spec states it: columns, the paper's numbers, claims.

Chen et al., "Diffusion Models for Multi-Modal Generative Modeling" (ICLR 2024), Tables 1-4,
the night2day numbers of Appendix E.1, the representation experiment of E.4, and reference
numbers used for sanity checks. Each table is defined once, in the `table:` block of its spec
`benchmarks/<stem>.yaml` (columns with their metric, direction and print format; the
paper's numbers; notes, legend, LaTeX labels; claims); the shared metric vocabulary is
`benchmarks/metrics.yaml`; numbers no spec reproduces are in `benchmarks/reference/`.
This module reads those files directly (the report layer does not compose hydra configs:
the paper's side of a table does not change with the profile) and validates them.
"""
from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from repro.errors import UserError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
REFERENCE = BENCHMARKS / "reference"
# Specs that are not numbered tables of the paper (Appendix E.1's night2day numbers, E.4's experiment).
NAMED_SPECS = ("night2day", "representation", "diffusionmtl", "diffusionmtl_nyud")
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
    """One table of the paper: its rows x columns of numbers plus everything needed to render it
    (`notes` are the paper's notes, `paper_notes` in the spec; the spec's `notes` are ours,
    per profile, and reach the caption through the composed config)."""

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


def spec_stems() -> list[str]:
    """Spec file stems: numbered tables (benchmarks/tableN.yaml) first, then the named specs that exist."""
    numbered = sorted((p.stem for p in BENCHMARKS.glob("table*.yaml")), key=lambda t: int(t.removeprefix("table")))
    return numbered + [n for n in NAMED_SPECS if (BENCHMARKS / f"{n}.yaml").is_file()]


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text("utf-8")) or {}


@functools.cache
def _raw() -> dict[str, Any]:
    """{"metrics": ..., table key: its `table:` block, ..., "figure6": ..., "overhead": ...}."""
    raw: dict[str, Any] = {"metrics": _load(BENCHMARKS / "metrics.yaml")["metrics"]}
    for stem in spec_stems():
        doc = _load(BENCHMARKS / f"{stem}.yaml")
        raw[doc["table"]["key"]] = doc["table"]
        if "figure6" in doc:   # Figure 6 shares Table 2's setting and spec
            raw["figure6"] = {k: doc["figure6"][k] for k in ("title", "source", "paper_series", "claims")}
    for path in sorted(REFERENCE.glob("*.yaml")):
        doc = _load(path)
        if "table" in doc:
            raw[doc["table"]["key"]] = doc["table"]
        else:   # claims about no table (Appendix E.5's overhead)
            raw[path.stem] = doc
    return raw


def column_names(table: Any) -> list[str]:
    """The column names of a spec's `table:` block (composed or raw), in order."""
    return [c["name"] for c in table["columns"]]


def paper_numbers() -> dict[str, Any]:
    """Every definition as one dict: metrics, each table's block by key, other claims (a deep copy)."""
    return copy.deepcopy(_raw())


def table_ids() -> list[str]:
    """Keys of every block that is a table (has the paper's numbers and columns): specs first."""
    return [k for k, v in _raw().items() if isinstance(v, dict) and "paper" in v and "columns" in v]


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
    columns = tuple(Column(**{"label": c["name"], **c}) for c in raw["columns"])
    for c in columns:
        # The per-table direction is written out for readers of the YAML; it must agree
        # with the metric's own direction or the bold/claims would silently flip.
        if c.metric not in metrics or metrics[c.metric]["direction"] != c.direction:
            raise ValueError(f"{key}/{c.name}: direction {c.direction} disagrees with metric {c.metric}")
    rows = {str(name): list(values) for name, values in raw["paper"].items()}
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
        notes=tuple(raw.get("paper_notes") or ()),
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
        raise UserError(f"no claims block {block!r}: figure6 (benchmarks/table2.yaml) or benchmarks/reference/<block>.yaml")
    return copy.deepcopy(_raw()[block]["claims"])
