"""The readings study's verdicts on constructed cells: each seed tested as the tables test a claim
(repro.report.cells), the seeds combined (held / not held only when every seed agrees), the
first seed's difference and interval in the text, per-seed tests in the JSON, cells as
mean ± sd across seeds or one seed's value with its interval."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from repro.report.cells import CellData
from repro.report.readings import Reading, combine_seeds, evaluate_study, render_study

T2_ROWS = ["ADM (un-cond)", "MT-Diffusion-U", "MT-Diffusion-X"]
T2_COLS = ["IS", "FID", "sFID", "Precision", "Recall"]
X_VS_ADM = "MT-Diffusion-X FID < ADM (un-cond) FID"
PROVENANCE = {"profile": "tiny", "seeds": [0, 1], "wall_time_s": 1.0, "git_commit": "abc"}


def _replicates(mean: float, sd: float, seed: int, n: int = 400) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sd, n)


def _table2(fid: dict[tuple[str, int, str], tuple[float, float]]):
    """Cells of Table 2's study rows: FID with bootstrap replicates N(mean, sd), the other
    columns point values only; fid: (reading, seed, row) -> (mean, sd)."""
    records, data = [], {}
    for i, ((reading, seed, row), (mean, sd)) in enumerate(fid.items()):
        reps = _replicates(mean, sd, 100 + i)
        cells = data.setdefault(("2", reading, seed), {})
        for col in T2_COLS:
            value = float(reps.mean()) if col == "FID" else 1.0
            cells[row, col] = CellData(value, replicates=reps) if col == "FID" else CellData(value)
            low, high = (np.quantile(reps, [0.025, 0.975]) if col == "FID" else (np.nan, np.nan))
            records.append({"table": "2", "reading": reading, "seed": seed, "row": row, "column": col,
                            "value": value, "low": low, "high": high})
    return pd.DataFrame(records), data


def _fids(reading: str, x: list[tuple[float, float]], adm: list[tuple[float, float]]) -> dict:
    out = {}
    for seed, (xs, a) in enumerate(zip(x, adm)):
        out |= {(reading, seed, "MT-Diffusion-X"): xs, (reading, seed, "ADM (un-cond)"): a,
                (reading, seed, "MT-Diffusion-U"): (80.0, 1.0)}
    return out


@pytest.mark.parametrize("statuses, combined", [
    (["held", "held"], "held"),
    (["not held", "not held"], "not held"),
    (["held", "not held"], "inconclusive"),
    (["held", "inconclusive"], "inconclusive"),
    (["not held", "inconclusive"], "inconclusive"),
    (["held"], "held"),
    (["not evaluable", "not evaluable"], "not evaluable"),
    (["held", "not evaluable"], "inconclusive"),
])
def test_combine_seeds(statuses, combined):
    assert combine_seeds(statuses) == combined


def test_each_seed_is_tested_and_the_seeds_combined():
    """X beats ADM by 10 FID at both seeds (replicate sd 1): held at both, held; worse by 10 at
    both: not held; better at seed 0 and worse at seed 1: inconclusive; a tie at seed 0 whose
    intervals overlap: inconclusive there, hence overall."""
    fids = {}
    fids |= _fids("better", [(40, 1), (41, 1)], [(50, 1), (51, 1)])
    fids |= _fids("worse", [(60, 1), (61, 1)], [(50, 1), (51, 1)])
    fids |= _fids("split", [(40, 1), (61, 1)], [(50, 1), (51, 1)])
    fids |= _fids("tie", [(50, 3), (40, 1)], [(50, 3), (50, 1)])
    cells, data = _table2(fids)
    readings = [Reading(n, (), tables=("2",)) for n in ("better", "worse", "split", "tie")]
    claim = next(c for c in evaluate_study(cells, readings, {"2": T2_ROWS}, data) if c["text"] == X_VS_ADM)
    by = claim["by_reading"]
    assert {n: v["status"] for n, v in by.items()} == {"better": "held", "worse": "not held", "split": "inconclusive",
                                                       "tie": "inconclusive"}
    assert by["split"]["seed_status"] == {"0": "held", "1": "not held"}
    assert by["tie"]["seed_status"] == {"0": "inconclusive", "1": "held"}
    assert claim["holds_under"] == ["better"] and claim["inconclusive_under"] == ["split", "tie"]
    # the seed-0 test is the unpaired bootstrap of the difference: a's replicates minus b's
    cmp = by["better"]["seeds"]["0"]["comparisons"][0]
    x = data["2", "better", 0]["MT-Diffusion-X", "FID"]
    adm = data["2", "better", 0]["ADM (un-cond)", "FID"]
    lo, hi = np.quantile(x.replicates - adm.replicates, [0.025, 0.975])
    assert cmp["difference"] == pytest.approx(x.estimate - adm.estimate)
    assert (cmp["low"], cmp["high"]) == (pytest.approx(lo), pytest.approx(hi))
    # the difference of N(40, 1) and N(50, 1) draws: -10 ± 1.96 sqrt(2)
    assert lo == pytest.approx(-10 - 2.77, abs=0.5) and hi == pytest.approx(-10 + 2.77, abs=0.5)
    assert "unpaired" in cmp["test"]
    assert f"{x.estimate - adm.estimate:+.4g} [{lo:+.4g}, {hi:+.4g}]" in by["better"]["detail"]


def test_paired_seed_test_on_per_image_cells():
    """Table 1's rows score the same images: MT-Diffusion = Clean-Masked - 0.05 + noise per image is
    a paired test whose difference is the mean per-image difference; shifted up, not held."""
    rng = np.random.default_rng(0)
    cols = ["Mask-5", "Mask-10", "Mask-15", "Mask-20"]
    records, data = [], {}
    for reading, shift in (("fixed", -0.05), ("broken", 0.05)):
        for seed in (0, 1):
            cells = data.setdefault(("1", reading, seed), {})
            for i, col in enumerate(cols):
                clean = rng.uniform(0.2, 0.6, 64) + 0.1 * i
                items = {"Clean-Masked": clean, "SDEdit-": clean + 0.02 + rng.normal(0, 0.005, 64),
                         "MT-Diffusion": clean + shift + rng.normal(0, 0.01, 64)}
                for row, v in items.items():
                    cells[row, col] = CellData(float(v.mean()), items=v)
                    records.append({"table": "1", "reading": reading, "seed": seed, "row": row, "column": col,
                                    "value": float(v.mean())})
    readings = [Reading(n, (), tables=("1",)) for n in ("fixed", "broken")]
    claims = {c["text"]: c for c in evaluate_study(pd.DataFrame(records), readings,
                                                   {"1": ["Clean-Masked", "SDEdit-", "MT-Diffusion"]}, data)}
    c = claims["MT-Diffusion < Clean-Masked for every mask count"]["by_reading"]
    assert c["fixed"]["status"] == "held" and c["broken"]["status"] == "not held"
    first = c["fixed"]["seeds"]["0"]["comparisons"][0]
    d = data["1", "fixed", 0]
    by_hand = float(np.mean(d["MT-Diffusion", "Mask-5"].items - d["Clean-Masked", "Mask-5"].items))
    assert first["difference"] == pytest.approx(by_hand) and first["low"] < by_hand < first["high"] < 0
    assert "paired" in first["test"] and first["n"] == 64


def test_rendered_study_cells_and_machine_readable_tests():
    """Two seeds: "mean ± sd sd" (sd by hand); one seed: the value ± its interval's half-width, or
    [low, high] when asymmetric; the JSON carries every seed's comparisons; md shows the
    per-seed verdicts and the first seed's interval."""
    fids = _fids("two", [(40, 1), (42, 1)], [(50, 1), (52, 1)]) | _fids("one", [(40, 1)], [(50, 1)])
    cells, data = _table2(fids)
    one = cells[(cells.reading == "one") & (cells.column == "IS")]
    cells.loc[one.index, "low"] = np.where(one.row == "MT-Diffusion-X", 0.9, 0.5)
    cells.loc[one.index, "high"] = np.where(one.row == "MT-Diffusion-X", 1.1, 1.4)
    readings = [Reading("two", (), seeds=(0, 1), tables=("2",)), Reading("one", (), seeds=(0,), tables=("2",))]
    texts = render_study(cells, readings, {"2": T2_ROWS}, PROVENANCE, "constructed", data)
    x_fid = cells[(cells.reading == "two") & (cells.row == "MT-Diffusion-X") & (cells.column == "FID")].value
    mean, sd = x_fid.mean(), np.sqrt(((x_fid - x_fid.mean()) ** 2).sum())   # ddof 1 with two values
    md = texts["md"]
    line = next(ln for ln in md.splitlines() if ln.startswith("| MT-Diffusion-X: FID"))
    assert f"{mean:.2f} ± {sd:.2f} sd" in line
    assert "| MT-Diffusion-X: IS | 1.00 ± 0.00 sd | 1.00 ± 0.10 |" in md
    assert r"| ADM (un-cond): IS | 1.00 ± 0.00 sd | 1.00 \[0.50, 1.40\] |" in md   # md-escaped brackets
    assert "held (s0: held, s1: held)" in md and "held (s0: held)" in md
    doc = json.loads(texts["json"])
    claim = next(c for c in doc["claims"] if c["text"] == X_VS_ADM)
    tests = claim["by_reading"]["two"]["seeds"]
    assert set(tests) == {"0", "1"} and all(t["comparisons"][0]["low"] < t["comparisons"][0]["high"] < 0
                                             for t in tests.values())
    cell = next(c for c in doc["cells"] if c["reading"] == "one" and c["row"] == "MT-Diffusion-X" and c["column"] == "IS")
    assert (cell["low"], cell["high"], cell["n_seeds"]) == (0.9, 1.1, 1)
    assert "inconclusive" in doc["verdicts"] and {"md", "tex", "csv", "json"} == set(texts)
    assert r"\item Table 2: MT-Diffusion-X FID $<$ ADM (un-cond) FID; two, seed 0: \textsc{held}" in texts["tex"]
