"""Has each row learned? The last doubling of training on constructed efficiency curves (gains by
hand), the note in the rendered table, and end to end from Table 1's tiny efficiency curve."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from repro.report.learning import LEARNED, STILL_LEARNING, last_doublings, learning_note, row_learned
from repro.report.paper import table_spec
from repro.report.provenance import make_provenance
from repro.report.render import render_table

T2 = ["IS", "FID", "sFID", "Precision", "Recall"]


def _curve(points: dict[str, list[tuple[int, float]]], column: str = "FID", columns=T2) -> pd.DataFrame:
    """Long-form curves with `column` set per point and the other columns constant."""
    return pd.DataFrame([{"row": row, "training_step": step, **{c: 1.0 for c in columns}, column: value}
                         for row, pts in points.items() for step, value in pts])


def test_last_doubling_on_a_constructed_fid_curve():
    """ADM's FID 433 / 124 / 60 / 52 at 300..1200 steps: the last doubling 600 -> 1200 gains
    (124 - 52) / 124 = 58%: still learning. X: 55 -> 52, 5.5%: learned. A curve that gets worse
    (50 -> 55, -10%) has learned (more steps did not help). Snapshots only after half the
    budget: no verdict. Only FID is judged in Table 2 (IS etc. stay out)."""
    frame = _curve({"ADM (un-cond)": [(300, 433.0), (600, 124.0), (900, 60.0), (1200, 52.0)],
                    "MT-Diffusion-X": [(300, 300.0), (600, 55.0), (900, 53.0), (1200, 52.0)],
                    "MT-Diffusion-U": [(300, 80.0), (600, 50.0), (1200, 55.0)],
                    "MT-Diffusion-M": [(900, 70.0), (1200, 60.0)]})
    ds = {d.row: d for d in last_doublings(frame, table_spec("2").columns)}
    assert set(ds) == {"ADM (un-cond)", "MT-Diffusion-X", "MT-Diffusion-U"}
    assert all(d.column == "FID" and (d.step_half, d.step) == (600, 1200) for d in ds.values())
    assert ds["ADM (un-cond)"].gain == pytest.approx(72 / 124) and not ds["ADM (un-cond)"].learned
    assert ds["MT-Diffusion-X"].gain == pytest.approx(3 / 55) and ds["MT-Diffusion-X"].learned
    assert ds["MT-Diffusion-U"].gain == pytest.approx(-0.1) and ds["MT-Diffusion-U"].learned
    note = learning_note(list(ds.values()), table_spec("2").columns)
    assert f"ADM (un-cond): FID 124.00 -> 52.00 (+58.1%), steps 600 -> 1200: {STILL_LEARNING}" in note
    assert f"MT-Diffusion-X: FID 55.00 -> 52.00 (+5.5%), steps 600 -> 1200: {LEARNED}" in note


def test_half_step_between_snapshots_and_the_10_percent_edge():
    """Budget 1000 with snapshots every 300: half is 500, the last snapshot before it is 300.
    A gain of exactly 10% is not under 10%: still learning; 9.9% is learned."""
    frame = _curve({"a": [(300, 100.0), (600, 95.0), (900, 92.0), (1000, 90.0)],
                    "b": [(300, 100.0), (600, 95.0), (1000, 90.1)]})
    ds = {d.row: d for d in last_doublings(frame, table_spec("2").columns)}
    assert (ds["a"].step_half, ds["a"].step) == (300, 1000)
    assert ds["a"].gain == pytest.approx(0.10) and not ds["a"].learned
    assert ds["b"].gain == pytest.approx(0.099) and ds["b"].learned


def test_a_row_with_several_lpips_columns_has_learned_only_if_every_one_has():
    cols = ["Mask-5", "Mask-10", "Mask-15", "Mask-20"]
    frame = pd.DataFrame([{"row": "SDEdit-", "training_step": s, "Mask-5": v5, "Mask-10": 0.4, "Mask-15": 0.5,
                           "Mask-20": 0.6} for s, v5 in ((3, 0.30), (6, 0.25))]
                         + [{"row": "MT-Diffusion", "training_step": s, **{c: 0.5 for c in cols}} for s in (3, 6)])
    ds = last_doublings(frame, table_spec("1").columns)
    assert len(ds) == 8 and {d.column for d in ds} == set(cols)
    assert row_learned(ds) == {"SDEdit-": False, "MT-Diffusion": True}   # Mask-5 gained 1/6


def test_higher_is_better_columns_when_no_fid_or_lpips():
    """A table without FID / LPIPS judges every column, each in its own direction: IS 5 -> 6 is +20%."""
    frame = _curve({"r": [(3, 5.0), (6, 6.0)]}, column="IS", columns=["IS"])
    spec_is = [c for c in table_spec("2").columns if c.name == "IS"]
    (d,) = last_doublings(frame, spec_is)
    assert d.gain == pytest.approx(0.2) and not d.learned


def test_rendered_table_carries_the_note_in_md_tex_and_json(tmp_path):
    frame = _curve({"ADM (un-cond)": [(600, 124.0), (1200, 52.0)], "MT-Diffusion-X": [(600, 55.0), (1200, 52.0)]})
    ds = last_doublings(frame, table_spec("2").columns)
    ours = pd.DataFrame({"ADM (un-cond)": [2.0, 52.0, 9.0, 0.5, 0.5],
                         "MT-Diffusion-X": [2.0, 52.0, 9.0, 0.5, 0.5]}, index=T2).T
    prov = make_provenance(profile="smoke", dataset="embedded-32", n_samples=128, feature_extractor="f",
                           config_key="k", wall_time_s=1.0, git_commit="abc")
    paths = render_table(2, ours, prov, tmp_path, learning=ds)
    assert f"steps 600 -> 1200: {STILL_LEARNING}" in paths["md"].read_text()
    assert "still learning" in paths["tex"].read_text()
    doc = json.loads(paths["json"].read_text())
    rec = {r["row"]: r for r in doc["learning"]}
    assert rec["ADM (un-cond)"]["verdict"] == STILL_LEARNING and rec["MT-Diffusion-X"]["verdict"] == LEARNED
    assert rec["ADM (un-cond)"]["gain"] == pytest.approx(72 / 124)
    assert any("Has each row learned?" in n for n in doc["caption_notes"])
    plain = render_table(2, ours, prov, tmp_path / "plain")
    assert "learned" not in plain["md"].read_text() and json.loads(plain["json"].read_text())["learning"] == []


@pytest.mark.slow
def test_table1_tiny_notes_the_last_doubling_of_its_efficiency_curve(tmp_path, monkeypatch):
    """Table 1 at tiny keeps EMA snapshots every 3 of 6 steps: the note reads the efficiency csv's
    points at 3 and 6 steps (gains recomputed here from the csv)."""
    from repro.table import cli

    monkeypatch.chdir(tmp_path)
    assert cli(["1", "--profile", "tiny", "--store", str(tmp_path / "jobs"), "--out", str(tmp_path / "t"),
                "eval.n_images=2", "eval.mask_counts=[1,2,3,4]"]) == 0
    curve = pd.read_csv(tmp_path / "t" / "curves" / "table1_efficiency.csv")
    doc = json.loads((tmp_path / "t" / "table1.json").read_text())
    assert {r["row"] for r in doc["learning"]} == set(curve.row) == {"SDEdit-", "MT-Diffusion"}
    for r in doc["learning"]:
        c = curve[curve.row == r["row"]].set_index("training_step")[r["column"]]
        assert (r["step_half"], r["step"]) == (3, 6)
        assert r["gain"] == pytest.approx((c[3] - c[6]) / abs(c[3]), abs=1e-5)   # csv keeps 6 digits
        assert r["learned"] == (r["gain"] < 0.10)
    assert "Has each row learned?" in (tmp_path / "t" / "table1.md").read_text()
    assert np.isfinite([r["gain"] for r in doc["learning"]]).all()
