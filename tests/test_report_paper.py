"""The paper's side of each table as its spec defines it: loading, shapes, directions, print precision."""
from __future__ import annotations

import numpy as np
import pytest

from repro.errors import UserError
from repro.report.paper import normalize_table_id, paper_numbers, paper_table, table_ids, table_spec

PAPER_TABLES = ["table1", "table2", "table3", "table4"]


def test_table_ids_and_normalization():
    assert set(PAPER_TABLES) <= set(table_ids())
    assert {"night2day", "reference_adm", "diffusionmtl"} <= set(table_ids())
    assert normalize_table_id(3) == normalize_table_id("3") == normalize_table_id("table3") == "table3"
    for bad in (5, "table9", "figure6", ""):
        with pytest.raises(UserError):
            normalize_table_id(bad)


@pytest.mark.parametrize("table", table_ids())
def test_paper_table_is_rows_by_columns_in_paper_order(table):
    spec = table_spec(table)
    frame = paper_table(table)
    assert list(frame.index) == spec.row_names and list(frame.columns) == spec.column_names
    assert frame.dtypes.map(lambda d: d == np.float64).all()
    # the YAML's null and only the YAML's null becomes NaN
    nulls = [[v is None for v in spec.rows[r]] for r in spec.row_names]
    assert (frame.isna().to_numpy() == np.array(nulls)).all()


def test_empty_cells_of_table4_are_nan():
    row = paper_table(4).loc["InternImage-H (Wang et al., 2022)"]
    assert row.isna().tolist() == [True, True, False]


@pytest.mark.parametrize("table", table_ids())
def test_print_format_keeps_every_digit_the_paper_prints(table):
    """Formatting at the table's precision must round-trip the paper's own numbers, and use
    no more decimals than the paper does (its precision, not more)."""
    spec = table_spec(table)
    frame = paper_table(table)
    by_format: dict[str, list[float]] = {}
    for col in spec.columns:
        values = frame[col.name].dropna().tolist()
        assert all(float(col.fmt(v)) == v for v in values), col
        by_format.setdefault(col.format, []).extend(values)
    for fmt, values in by_format.items():  # the last decimal is used by some number
        decimals = int(fmt.strip(".f"))
        assert not values or any(round(v, decimals - 1) != v for v in values), (table, fmt)


def test_directions_and_scales():
    metrics = paper_numbers()["metrics"]
    assert metrics["LPIPS"]["direction"] == metrics["FID"]["direction"] == "lower_better"
    assert metrics["IS"]["direction"] == metrics["class_IoU"]["direction"] == "higher_better"
    for table in PAPER_TABLES:
        for col in table_spec(table).columns:
            assert col.direction == metrics[col.metric]["direction"]
            assert metrics[col.metric]["scale"]
    # fractions stay fractions: accuracies, precision and recall in [0, 1]
    for table, cols in (("table2", ["Precision", "Recall"]), ("table3", ["Precision", "Recall"]),
                        ("table4", ["per_pixel_acc", "per_class_acc", "class_IoU"]), ("table1", None)):
        frame = paper_table(table)
        values = frame[cols] if cols else frame
        assert ((values.fillna(0) >= 0) & (values.fillna(0) <= 1)).all().all()


def test_paper_numbers_is_a_copy():
    numbers = paper_numbers()
    numbers["table1"]["paper"]["MT-Diffusion"][0] = 99.0
    assert paper_table(1).at["MT-Diffusion", "Mask-5"] != 99.0
    assert len(paper_numbers()["reference_adm"]["param_counts"]) == 5
