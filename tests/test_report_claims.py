"""Claims of the specs (benchmarks/<stem>.yaml): every check op gives held / not held / not evaluable, and
each structured check agrees with an independent, hand-written reading of its sentence."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from repro.errors import UserError
from repro.report.claims import HELD, NOT_EVALUABLE, NOT_HELD, count_statuses, curve_claims, evaluate_claims, expand
from repro.report.paper import other_claims, paper_table, table_spec

TABLES = ["table1", "table2", "table3", "table4", "night2day"]

# The sentence of each claim, read by hand into pandas (independent of the check vocabulary).
T3_GUIDED = [
    ("ADM*_g (released, classifier guidance)", "ADM* (released checkpoint)"),
    ("ADM_g (continued, classifier guidance)", "ADM (continued training)"),
    ("MT-Diffusion_g", "MT-Diffusion"),
    ("MT-Diffusion^f_g", "MT-Diffusion^f"),
    ("MT-Diffusion*_g (restoration, 10% masking; not comparable)",
     "MT-Diffusion* (restoration, 10% masking; not comparable)"),
]
ORACLES = {
    "MT-Diffusion < Clean-Masked for every mask count":
        lambda f: (f.loc["MT-Diffusion"] < f.loc["Clean-Masked"]).all(),
    "MT-Diffusion < SDEdit- for every mask count":
        lambda f: (f.loc["MT-Diffusion"] < f.loc["SDEdit-"]).all(),
    "SDEdit- > Clean-Masked for every mask count":
        lambda f: (f.loc["SDEdit-"] > f.loc["Clean-Masked"]).all(),
    "each row increases with the mask count":
        lambda f: bool((f.diff(axis=1).iloc[:, 1:] > 0).all().all()),
    "MT-Diffusion-X FID < ADM (un-cond) FID":
        lambda f: f.at["MT-Diffusion-X", "FID"] < f.at["ADM (un-cond)", "FID"],
    "MT-Diffusion-X FID < MT-Diffusion-U FID":
        lambda f: f.at["MT-Diffusion-X", "FID"] < f.at["MT-Diffusion-U", "FID"],
    "MT-Diffusion-M* and MT-Diffusion-E* beat ADM (un-cond) on FID":
        lambda f: max(f.at["MT-Diffusion-M*", "FID"], f.at["MT-Diffusion-E*", "FID"]) < f.at["ADM (un-cond)", "FID"],
    "MT-Diffusion FID <= ADM (continued training) FID":
        lambda f: f.at["MT-Diffusion", "FID"] <= f.at["ADM (continued training)", "FID"],
    "classifier guidance improves FID for every model it is applied to":
        lambda f: all(f.at[g, "FID"] < f.at[u, "FID"] for g, u in T3_GUIDED),
    "MT-Diffusion beats single-task diffusion on all three metrics":
        lambda f: (f.loc["MT-Diffusion"] > f.loc["Single-task diffusion"]).all(),
    "MT-Diffusion beats single-task diffusion on FID and IS":
        lambda f: f.at["MT-Diffusion", "FID"] < f.at["Single-task diffusion", "FID"]
        and f.at["MT-Diffusion", "IS"] > f.at["Single-task diffusion", "IS"],
    "the IS of MT-Diffusion is slightly better than that of the ground-truth data":
        lambda f: f.at["MT-Diffusion", "IS"] > f.at["Ground truth", "IS"],
}


def frame(rows: dict[str, list[float]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns, dtype=float)


@pytest.mark.parametrize("table", TABLES)
def test_paper_claims_parse_and_name_real_rows_and_columns(table):
    spec = table_spec(table)
    assert spec.claims, f"{table} has no claims"
    for claim in spec.claims:
        comparisons = expand(spec, claim)
        assert comparisons
        for cmp in comparisons:
            for row, col in (cmp.a, cmp.b):
                assert row in spec.rows, (claim["text"], row)
                assert col in spec.column_names, (claim["text"], col)


@pytest.mark.parametrize("table", TABLES)
def test_paper_numbers_hold_the_papers_own_claims(table):
    # Checked by reading the tables: every claim listed for Tables 1-4 (and the night2day
    # text) holds on the paper's own numbers, including "classifier guidance improves FID
    # for every model" (all five guided/unguided pairs of Table 3 improve).
    results = evaluate_claims(table, paper_table(table))
    assert [r["status"] for r in results] == [HELD] * len(results), results
    for r, claim in zip(results, table_spec(table).claims):
        assert ORACLES[claim["text"]](paper_table(table))


def test_every_claim_has_an_oracle():
    texts = {c["text"] for t in TABLES for c in table_spec(t).claims}
    assert texts == set(ORACLES)


@pytest.mark.parametrize("table", TABLES)
def test_structured_checks_agree_with_the_sentences_on_perturbed_tables(table):
    """Random log-normal perturbations of the paper's numbers flip claims both ways; the
    structured check must say held exactly when the hand-written reading says true."""
    rng = np.random.default_rng(0)
    base = paper_table(table).fillna(1.0)
    seen = {c["text"]: set() for c in table_spec(table).claims}
    for _ in range(200):
        ours = base * np.exp(rng.normal(0.0, 0.5, size=base.shape))
        for r in evaluate_claims(table, ours):
            truth = bool(ORACLES[r["text"]](ours))
            assert r["status"] == (HELD if truth else NOT_HELD), (r, ours)
            seen[r["text"]].add(r["status"])
    # the perturbations exercised both outcomes of every claim
    assert all(s == {HELD, NOT_HELD} for s in seen.values()), seen


COLS = ["Mask-5", "Mask-10", "Mask-15", "Mask-20"]  # Table 1: LPIPS, lower is better


@pytest.mark.parametrize(
    "op, a, b, expected",
    [
        ("lt", 0.1, 0.2, HELD), ("lt", 0.2, 0.2, NOT_HELD), ("lt", 0.3, 0.2, NOT_HELD),
        ("le", 0.1, 0.2, HELD), ("le", 0.2, 0.2, HELD), ("le", 0.3, 0.2, NOT_HELD),
        ("gt", 0.3, 0.2, HELD), ("gt", 0.2, 0.2, NOT_HELD), ("gt", 0.1, 0.2, NOT_HELD),
        ("ge", 0.3, 0.2, HELD), ("ge", 0.2, 0.2, HELD), ("ge", 0.1, 0.2, NOT_HELD),
        ("better", 0.1, 0.2, HELD), ("better", 0.2, 0.2, NOT_HELD), ("better", 0.3, 0.2, NOT_HELD),
    ],
)
def test_pair_ops(op, a, b, expected):
    ours = frame({"A": [a, 0.5, 0.5, 0.5], "B": [b, 0.5, 0.5, 0.5]}, COLS)
    claim = {"text": "t", "check": {"op": op, "left": "A", "right": "B", "columns": ["Mask-5"]}}
    [result] = evaluate_claims("table1", ours, [claim])
    assert result["status"] == expected, result


def test_better_reads_each_columns_direction():
    # Table 2: IS higher is better, FID lower is better.
    cols = table_spec("table2").column_names
    a = frame({"A": [30, 10, 10, 0.7, 0.7], "B": [20, 20, 20, 0.5, 0.5]}, cols)
    claim = {"text": "A beats B", "check": {"op": "better", "left": "A", "right": "B", "columns": "all"}}
    assert evaluate_claims("table2", a, [claim])[0]["status"] == HELD
    swapped = a.rename(index={"A": "B", "B": "A"})
    assert evaluate_claims("table2", swapped, [claim])[0]["status"] == NOT_HELD
    one_off = a.copy()
    one_off.at["A", "Recall"] = 0.4  # worse on one higher-is-better column only
    result = evaluate_claims("table2", one_off, [claim])[0]
    assert result["status"] == NOT_HELD and "1 of 5 comparisons fail" in result["detail"]
    assert "Recall 0.40 > 0.50 [fails]" in result["detail"]


def test_pairs_need_every_pair():
    ours = frame({"A": [0.1] * 4, "B": [0.2] * 4, "C": [0.3] * 4, "D": [0.05] * 4}, COLS)
    claim = {"text": "t", "check": {"op": "lt", "pairs": [["A", "B"], ["C", "D"]], "columns": ["Mask-5"]}}
    result = evaluate_claims("table1", ours, [claim])[0]
    assert result["status"] == NOT_HELD
    assert "A vs B: Mask-5 0.100 < 0.200" in result["detail"]
    assert "C vs D: Mask-5 0.300 < 0.050 [fails]" in result["detail"]


@pytest.mark.parametrize(
    "op, values, expected",
    [
        ("increasing", [0.1, 0.2, 0.3, 0.4], HELD),
        ("increasing", [0.1, 0.2, 0.2, 0.4], NOT_HELD),  # strict
        ("increasing", [0.4, 0.3, 0.2, 0.1], NOT_HELD),
        ("decreasing", [0.4, 0.3, 0.2, 0.1], HELD),
        ("decreasing", [0.4, 0.5, 0.2, 0.1], NOT_HELD),
    ],
)
def test_monotone_ops(op, values, expected):
    ours = frame({"A": values}, COLS)
    claim = {"text": "t", "check": {"op": op, "rows": ["A"], "columns": COLS}}
    assert evaluate_claims("table1", ours, [claim])[0]["status"] == expected


def test_monotone_detail_is_a_chain():
    ours = frame({"A": [0.1, 0.2, 0.15, 0.4]}, COLS)
    claim = {"text": "t", "check": {"op": "increasing", "rows": ["A"], "columns": COLS}}
    detail = evaluate_claims("table1", ours, [claim])[0]["detail"]
    assert detail == ("1 of 3 comparisons fail. A: Mask-5 0.100 < Mask-10 0.200 < Mask-15 0.150 [fails]"
                      " < Mask-20 0.400")


def test_missing_row_is_not_evaluable_and_named():
    ours = paper_table("table1").drop(index="SDEdit-")
    results = {r["text"]: r for r in evaluate_claims("table1", ours)}
    r = results["MT-Diffusion < SDEdit- for every mask count"]
    assert r["status"] == NOT_EVALUABLE and "row SDEdit- absent" in r["detail"]
    # "rows: all" means the paper's rows: one missing row makes the claim not evaluable
    assert results["each row increases with the mask count"]["status"] == NOT_EVALUABLE
    assert results["MT-Diffusion < Clean-Masked for every mask count"]["status"] == HELD


def test_nan_cell_is_not_evaluable_and_named():
    ours = paper_table("table2")
    ours.at["MT-Diffusion-E*", "FID"] = np.nan
    r = evaluate_claims("table2", ours)[2]
    assert r["status"] == NOT_EVALUABLE
    assert r["detail"].startswith("MT-Diffusion-E*/FID is NaN. MT-Diffusion-M* vs ADM (un-cond): FID 13.48 < 23.22")


def test_missing_column_is_not_evaluable():
    ours = paper_table("table4").drop(columns="class_IoU")
    r = evaluate_claims("table4", ours)[0]
    assert r["status"] == NOT_EVALUABLE and "column class_IoU absent" in r["detail"]


def test_a_counterexample_beats_missing_cells():
    ours = paper_table("table1")
    ours.at["MT-Diffusion", "Mask-5"] = 0.9  # fails against Clean-Masked 0.311
    ours.at["MT-Diffusion", "Mask-20"] = np.nan
    r = evaluate_claims("table1", ours)[0]
    assert r["status"] == NOT_HELD
    assert "1 of 4 comparisons fail" in r["detail"] and "MT-Diffusion/Mask-20 is NaN" in r["detail"]


def test_equal_looking_numbers_get_more_digits():
    ours = frame({"A": [0.1234, 0.5, 0.5, 0.5], "B": [0.1232, 0.5, 0.5, 0.5]}, COLS)
    claim = {"text": "t", "check": {"op": "lt", "left": "A", "right": "B", "columns": ["Mask-5"]}}
    assert "0.1234 < 0.1232 [fails]" in evaluate_claims("table1", ours, [claim])[0]["detail"]


def test_null_checks_are_not_evaluable_with_their_reason():
    for block in ("figure6", "overhead"):
        [claim] = other_claims(block)
        assert claim["check"] is None and claim["reason"]
        [r] = evaluate_claims("table1", paper_table("table1"), [claim])
        assert r == {"text": claim["text"], "status": NOT_EVALUABLE, "detail": claim["reason"]}


@pytest.mark.parametrize(
    "check",
    [
        {"op": "lessish", "left": "A", "right": "B", "columns": "all"},
        {"op": "lt", "left": "A", "right": "B", "columns": ["FID"]},  # not a Table 1 column
        {"op": "lt", "left": "A", "columns": "all"},
        {"op": "increasing", "rows": ["A"], "columns": ["Mask-5"]},
    ],
)
def test_malformed_checks_are_user_errors(check):
    with pytest.raises(UserError):
        evaluate_claims("table1", paper_table("table1"), [{"text": "t", "check": check}])


def test_count_statuses():
    ours = paper_table("table1").drop(index="SDEdit-")
    assert count_statuses(evaluate_claims("table1", ours)) == {HELD: 1, NOT_HELD: 0, "inconclusive": 0, NOT_EVALUABLE: 3}


@pytest.mark.parametrize("ours, base, above, narrows", [
    ([0.50, 0.60], [0.40, 0.55], "held", "held"),          # above, gap 0.10 -> 0.05
    ([0.50, 0.70], [0.40, 0.55], "held", "not held"),      # above, gap widens 0.10 -> 0.15
    ([0.10, 0.16], [0.44, 0.51], "not held", "not held"),  # below, gap -0.34 -> -0.35: widens
    ([0.52, 0.66], [0.83, 0.87], "not held", "held"),      # below, gap -0.31 -> -0.21: narrows
])
def test_figure6_claims_on_constructed_curves(ours, base, above, narrows):
    frame = pd.DataFrame([{"series": s, "iteration": i, "top1": v, "top5": v}
                          for s, values in (("E", ours), ("ADM", base)) for i, v in zip((0, 100), values)])
    claims = curve_claims(frame, "E", "ADM")
    assert [c["status"] for c in claims] == [above, narrows] * 2
