"""Cells with uncertainty: intervals by kind, paired / unpaired tests, claims with three-valued verdicts.

Oracles: constructed data with a known answer (coverage at about the nominal rate over
Monte-Carlo repetitions), an independent recomputation of the pooled score in the test,
hand-built claims whose verdict is obvious, and the npz round trip.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repro.report.cells import (
    CellData, arrays_of_cells, cell_interval, cells_from_arrays, claim_verdict, combine_verdicts, compare_cells,
)
from repro.report.claims import HELD, INCONCLUSIVE, NOT_EVALUABLE, NOT_HELD
from repro.report.paper import table_spec
from repro.report.provenance import make_provenance
from repro.report.render import render_table

COLS = ["Mask-5", "Mask-10", "Mask-15", "Mask-20"]


def nominal(covered: int, reps: int, level: float = 0.95) -> bool:
    return stats.binomtest(covered, reps, level).pvalue > 0.001


def confusion_per_image(rng, n_images: int, acc: float, pixels: int = 50, classes: int = 3) -> np.ndarray:
    """Per-image 3-class confusion matrices whose pixels are right with probability `acc`,
    each image with its own difficulty (so that images, not pixels, are the unit)."""
    out = np.zeros((n_images, classes, classes), dtype=np.int64)
    for i in range(n_images):
        p = np.clip(acc + rng.normal(0, 0.1), 0.01, 0.99)
        truth = rng.integers(0, classes, pixels)
        right = rng.random(pixels) < p
        pred = np.where(right, truth, (truth + 1) % classes)
        np.add.at(out[i], (truth, pred), 1)
    return out


def test_pooled_interval_recomputes_the_pooled_score_and_covers_it():
    rng = np.random.default_rng(0)
    covered, reps = 0, 80
    for rep in range(reps):
        items = confusion_per_image(rng, 40, acc=0.7)
        pooled = np.trace(items.sum(0)) / items.sum()    # per-pixel accuracy, computed here independently
        ci = cell_interval(CellData(pooled, items=items, pooled="per_pixel_acc"), n_resamples=400, seed=rep)
        assert ci.low <= pooled <= ci.high and ci.estimate == pooled
        covered += ci.low <= 0.7 <= ci.high
    # per-image difficulty spread 0.1 around 0.7 -> the pooled mean is 0.7 up to clipping
    assert nominal(covered, reps), covered


def test_replicate_intervals_are_their_percentiles():
    reps = np.arange(1000, dtype=np.float64)
    ci = cell_interval(CellData(500.0, replicates=reps))
    assert ci.low == pytest.approx(np.quantile(reps, 0.025)) and ci.high == pytest.approx(np.quantile(reps, 0.975))
    assert np.isnan(cell_interval(CellData(float("nan"), replicates=reps)).low)


def bootstrap_means(x: np.ndarray, rng, b: int = 500) -> np.ndarray:
    return x[rng.integers(0, len(x), (b, len(x)))].mean(axis=1)


def test_unpaired_difference_covers_the_true_difference():
    rng = np.random.default_rng(1)
    covered, reps = 0, 200
    for _ in range(reps):
        x, y = rng.normal(1.0, 1.0, 60), rng.normal(1.3, 1.0, 60)
        a = CellData(x.mean(), replicates=bootstrap_means(x, rng))
        b = CellData(y.mean(), replicates=bootstrap_means(y, rng))
        c = compare_cells(a, b)
        assert "unpaired" in c.test
        covered += c.difference.low <= -0.3 <= c.difference.high
    assert nominal(covered, reps), covered


def test_unpaired_p_value_is_small_for_a_large_difference_and_not_for_none():
    rng = np.random.default_rng(2)
    far = compare_cells(CellData(0.0, replicates=rng.normal(0, 1, 2000)), CellData(10.0, replicates=rng.normal(10, 1, 2000)))
    assert far.p_value < 0.01 and far.difference.high < 0
    same = compare_cells(CellData(0.0, replicates=rng.normal(0, 1, 2000)), CellData(0.0, replicates=rng.normal(0, 1, 2000)))
    assert same.p_value > 0.05 and same.difference.low < 0 < same.difference.high


def test_paired_cells_use_the_pairing():
    rng = np.random.default_rng(3)
    item = rng.normal(0, 5.0, 100)                     # shared per-image difficulty
    a, b = item + 0.2 + rng.normal(0, 0.1, 100), item + rng.normal(0, 0.1, 100)
    c = compare_cells(CellData(a.mean(), items=a), CellData(b.mean(), items=b))
    assert c.test.startswith("paired") and c.difference.low > 0 and c.p_value < 1e-6
    # pooled scores: the same resampled images on both sides
    ia = confusion_per_image(rng, 40, 0.9)
    ib = ia.copy()
    ib[:, 0, 0] -= 5                                    # five fewer right pixels of class 0 per image...
    ib[:, 0, 1] += 5                                    # ...predicted as class 1 instead
    pa, pb = np.trace(ia.sum(0)) / ia.sum(), np.trace(ib.sum(0)) / ib.sum()
    c = compare_cells(CellData(pa, items=ia, pooled="per_pixel_acc"), CellData(pb, items=ib, pooled="per_pixel_acc"),
                      n_resamples=300)
    assert c.difference.estimate == pytest.approx(pa - pb) and c.difference.low > 0 and c.p_value < 0.01


def test_combining_verdicts():
    assert combine_verdicts([HELD, HELD]) == HELD
    assert combine_verdicts([HELD, NOT_HELD, INCONCLUSIVE]) == NOT_HELD
    assert combine_verdicts([HELD, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine_verdicts([HELD, NOT_EVALUABLE]) == INCONCLUSIVE
    assert combine_verdicts([NOT_EVALUABLE]) == NOT_EVALUABLE


def table1_cells(mt_shift: list[float], seed: int = 0) -> dict[tuple[str, str], CellData]:
    """Clean-Masked and MT-Diffusion on the same 80 images; MT = Clean + shift per column."""
    rng = np.random.default_rng(seed)
    out = {}
    for j, col in enumerate(COLS):
        clean = rng.uniform(0.2, 0.6, 80) + 0.05 * j
        mt = clean + mt_shift[j] + rng.normal(0, 0.02, 80)
        out[("Clean-Masked", col)] = CellData(clean.mean(), items=clean)
        out[("MT-Diffusion", col)] = CellData(mt.mean(), items=mt)
    return out


@pytest.mark.parametrize("shift, expected", [
    ([-0.1, -0.1, -0.1, -0.1], HELD),
    ([-0.1, -0.1, 0.1, -0.1], NOT_HELD),     # one column against the claim
    ([-0.1, -0.1, 0.0, -0.1], INCONCLUSIVE),  # one column with no difference
])
def test_claim_over_every_mask_count(shift, expected):
    claim = {"text": "MT < Clean", "check": {"op": "lt", "left": "MT-Diffusion", "right": "Clean-Masked",
                                              "columns": "all"}}
    r = claim_verdict(table_spec(1), claim, table1_cells(shift))
    assert r["status"] == expected, r["detail"]
    assert len(r["comparisons"]) == 4 and all("p_value" in c for c in r["comparisons"])
    assert "p=" in r["detail"] and "[" in r["detail"]


def test_missing_cells_are_not_evaluable():
    claim = {"text": "MT < SDEdit", "check": {"op": "lt", "left": "MT-Diffusion", "right": "SDEdit-", "columns": "all"}}
    assert claim_verdict(table_spec(1), claim, table1_cells([-0.1] * 4))["status"] == NOT_EVALUABLE


def test_npz_round_trip(tmp_path):
    cells = {"FID": CellData(12.0, replicates=np.array([11.0, 13.0])),
             "IS": CellData(float("nan")),
             "per_pixel_acc": CellData(0.5, items=np.ones((3, 2, 2), dtype=np.int32), pooled="per_pixel_acc"),
             "Mask-5": CellData(0.3, items=np.array([0.1, 0.5]))}
    cols = list(cells)
    np.savez(tmp_path / "c.npz", **arrays_of_cells(cols, cells))
    with np.load(tmp_path / "c.npz") as data:
        back = cells_from_arrays([str(c) for c in data["columns"]], {c: cells[c].estimate for c in cols},
                                 {k: data[k] for k in data.files})
    assert back["FID"].kind == "replicates" and list(back["FID"].replicates) == [11.0, 13.0]
    assert back["IS"].items is None and back["IS"].replicates is None
    assert back["per_pixel_acc"].pooled == "per_pixel_acc" and back["per_pixel_acc"].items.shape == (3, 2, 2)
    assert list(back["Mask-5"].items) == [0.1, 0.5]


def test_rendered_cells_show_intervals_and_reference_rows_stay_out(tmp_path):
    cells = table1_cells([-0.1] * 4)
    ours = pd.DataFrame({row: {col: c.estimate for (r, col), c in cells.items() if r == row}
                         for row in ("Clean-Masked", "MT-Diffusion")}).T
    ours.loc["ref: blur 0.5"] = [0.0001] * 4         # better than every row: must not be bold
    intervals = {row: {col: [ours.at[row, col] - 0.01, ours.at[row, col] + 0.01] for col in COLS} for row in ours.index}
    prov = make_provenance(profile="tiny", dataset="d", n_samples=80, feature_extractor="f", git_commit="x")
    paths = render_table(1, ours, prov, tmp_path, intervals=intervals, cells=cells, interval_note="Intervals: test.",
                         reference_rows=["ref: blur 0.5"])
    md = paths["md"].read_text()
    assert "± 0.010" in md and "Intervals: test." in md and "*ref: blur 0.5*" in md
    assert "**0.000" not in md                        # the reference row is never bold
    frame = pd.read_csv(paths["csv"])
    row = frame[(frame.row == "MT-Diffusion") & (frame.column == "Mask-5")].iloc[0]
    assert row.low == pytest.approx(row.ours - 0.01) and row.high == pytest.approx(row.ours + 0.01)
    assert frame[frame.row == "ref: blur 0.5"].reference.all()
    doc = pd.read_json(paths["json"], typ="series")
    first = doc["claims"][0]
    assert first["status"] == HELD and first["comparisons"][0]["test"].startswith("paired")
    assert r"{\scriptsize $\pm$ 0.010}" in paths["tex"].read_text()
