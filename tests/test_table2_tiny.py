"""Table 2 and Figure 6 end to end at the tiny profile; re-evaluation from saved samples."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from repro.config import compose
from repro.figure import cli as figure_cli
from repro.jobs import samples as samples_format
from repro.jobs.store import JobStore
from repro.plan import plan
from repro.table import cli

from helpers import tiny_table_args

pytestmark = pytest.mark.slow
ROWS = ("ADM (un-cond)", "ADM (class cond)", "MT-Diffusion-U", "MT-Diffusion-X", "MT-Diffusion-M",
        "MT-Diffusion-M*", "MT-Diffusion-E", "MT-Diffusion-E*")
COLUMNS = ("IS", "FID", "sFID", "Precision", "Recall")


@pytest.fixture(scope="module")
def table2(tiny_root):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tiny_root   # tests/conftest.py: shared with the other tiny tables
    args = tiny_table_args("2", root)
    assert cli(args) == 0
    yield root, args
    torch.set_num_threads(threads)


def test_every_row_and_metric_with_provenance_and_claims(table2):
    root, _ = table2
    doc = json.loads((root / "tables" / "table2.json").read_text())
    rows = {r["row"]: r for r in doc["rows"]}
    assert {r for r in rows if not rows[r]["reference"]} == set(ROWS)
    # calibration rows: real vs real and four degradations at three strengths, never best
    reference = [r for r in rows if rows[r]["reference"]]
    assert len(reference) == 13 and "ref: real (test vs train)" in reference
    assert not any(c["best"] for r in reference for c in rows[r]["cells"].values())
    for name in ROWS:
        cells = rows[name]["cells"]
        assert cells["FID"]["low"] < cells["FID"]["high"]       # every cell with its interval
        assert cells["IS"]["ours"] >= 1.0 - 1e-6 and cells["FID"]["ours"] >= 0 and cells["sFID"]["ours"] >= 0
        assert all(0 <= cells[c]["ours"] <= 1 for c in ("Precision", "Recall"))
        assert all(cells[c]["paper"] is not None for c in COLUMNS)
    assert doc["provenance"]["n_samples"] == 8              # the tiny profile's count, stated in the output
    assert "FeatureNet" in doc["provenance"]["feature_extractor"]
    assert len(doc["claims"]) == 3 and all(c["status"] in ("held", "not held", "inconclusive") for c in doc["claims"])


def test_starred_models_continue_from_the_multitask_ones():
    cfg = compose("2", "tiny")
    jobs = {r.name: r.job for r in plan(cfg)}
    star = jobs["MT-Diffusion-M*"].deps["samples"].deps["model"]
    assert star.config["model"]["single_task"]
    dropout = star.deps["init"]
    assert dropout.config["model"]["label_dropout"] == 0.5
    assert dropout.deps["init"] == jobs["MT-Diffusion-M"].deps["samples"].deps["model"]
    # Table 1's models are the same jobs as Table 2's ADM (un-cond) and MT-Diffusion-X at this profile.
    t1 = {r.name: r.job.deps["samples"].deps["model"] for r in plan(compose("1", "tiny"))
          if "samples" in r.job.deps and "model" in r.job.deps["samples"].deps}
    assert t1["SDEdit-"] == jobs["ADM (un-cond)"].deps["samples"].deps["model"]
    assert t1["MT-Diffusion"] == jobs["MT-Diffusion-X"].deps["samples"].deps["model"]


EFFICIENCY_ROWS = ("ADM (un-cond)", "ADM (class cond)", "MT-Diffusion-U", "MT-Diffusion-X", "MT-Diffusion-M",
                   "MT-Diffusion-E")


def test_efficiency_curves_end_at_the_table_rows(table2):
    """Quality vs training iterations: each from-scratch row scored at its EMA snapshot (step 3
    of 6 at this profile) and at the end, where the point is the table's own number."""
    import pandas as pd

    root, _ = table2
    curves = pd.read_csv(root / "tables" / "curves" / "table2_efficiency.csv")
    assert list(curves.columns) == ["row", "training_step", *COLUMNS]
    assert tuple(dict.fromkeys(curves.row)) == EFFICIENCY_ROWS
    assert curves.groupby("row", sort=False).training_step.apply(list).tolist() == [[3, 6]] * len(EFFICIENCY_ROWS)
    table = pd.read_csv(root / "tables" / "table2.csv").set_index(["row", "column"]).ours
    final = curves[curves.training_step == 6].set_index("row")
    for name in EFFICIENCY_ROWS:
        assert final.at[name, "FID"] == pytest.approx(table[name, "FID"], rel=1e-5)
    mid = curves[curves.training_step == 3].set_index("row")
    assert (mid.FID != final.FID).any()        # a different model was sampled at step 3
    for ext in ("png", "pdf"):
        assert (root / "tables" / "curves" / f"table2_efficiency.{ext}").stat().st_size > 0


@pytest.mark.parametrize("override, message", [
    ("efficiency.rows=['ADM (un-cond)',Nope]", "efficiency.rows names 'Nope'"),
    ("efficiency.rows=['MT-Diffusion-M*']", "not trained from scratch"),
])
def test_efficiency_rows_are_checked_before_any_job(tmp_path, override, message, capsys):
    args = tiny_table_args("2", tmp_path, override)
    assert cli(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists()


def test_joint_rows_generate_labels(table2):
    root, _ = table2
    cfg = compose("2", "tiny", overrides=[f"data.root={root / 'data'}"])
    store = JobStore(root / "jobs")
    for r in plan(cfg):
        if "samples" not in r.job.deps:   # calibration rows score test images
            continue
        gen = store.dir(r.job.deps["samples"])
        arr = samples_format.read(gen)
        assert arr.kind == "generations"
        assert arr["images"].dtype == np.uint8 and arr["images"].shape == (8, 16, 16, 3)
        if r.name in ("ADM (class cond)", "MT-Diffusion-M", "MT-Diffusion-E"):
            assert ((arr["labels"] >= 0) & (arr["labels"] < 10)).all()


def test_reevaluation_from_saved_samples_is_identical(table2, monkeypatch, capsys):
    """Deleting the evaluate jobs re-scores the saved samples: no sampling, one feature pass per
    row (the samples'), the reference statistics from the cache; identical numbers."""
    import repro.metrics.fidelity as fidelity

    root, args = table2
    before = json.loads((root / "tables" / "table2.json").read_text())
    cfg = compose("2", "tiny", overrides=[f"data.root={root / 'data'}"])
    store = JobStore(root / "jobs")
    rows = [r for r in plan(cfg) if r.name in ("ADM (un-cond)", "MT-Diffusion-E")]
    samples = {r.name: samples_format.path(store.dir(r.job.deps["samples"])) for r in rows}
    mtimes = {k: p.stat().st_mtime_ns for k, p in samples.items()}
    for r in rows:
        shutil.rmtree(store.dir(r.job).path)
    passes = []
    real = fidelity.extract_features
    monkeypatch.setattr(fidelity, "extract_features", lambda images, *a, **k: passes.append(len(images)) or real(images, *a, **k))
    capsys.readouterr()
    assert cli(args) == 0
    assert f"{len(rows)} run" in capsys.readouterr().out            # only the evaluate jobs ran
    assert passes == [8] * len(rows)                                 # samples only: the reference came from the cache
    assert {k: p.stat().st_mtime_ns for k, p in samples.items()} == mtimes
    after = json.loads((root / "tables" / "table2.json").read_text())
    for a, b in zip(before["rows"], after["rows"]):
        for c in COLUMNS:
            x, y = a["cells"][c]["ours"], b["cells"][c]["ours"]
            assert x == y or (math.isnan(x) and math.isnan(y)), (a["row"], c)


def test_figure6_writes_curves_plot_and_claims(table2):
    root, _ = table2
    out = root / "tables"
    assert figure_cli(["6", "--profile", "tiny", "--store", str(root / "jobs"), "--out", str(out),
                       f"data.root={root / 'data'}"]) == 0
    for ext in ("png", "pdf", "csv", "json", "md"):
        assert (out / f"figure6.{ext}").stat().st_size > 0
    doc = json.loads((out / "figure6.json").read_text())
    series = {c["series"] for c in doc["curves"]}
    assert series == {"MT-Diffusion-E classifier", "ADM classifier"}
    steps = sorted({c["iteration"] for c in doc["curves"]})
    assert steps == [0, 2, 4]
    assert all(0 <= c["top1"] <= c["top5"] <= 1 for c in doc["curves"])
    assert len(doc["claims"]) == 4 and all(c["status"] in ("held", "not held", "inconclusive") for c in doc["claims"])


def test_every_row_has_its_own_sample_figure(table2):
    """One grid per row, PNG and PDF; M and M* (same slug but for the star) do not collide;
    a re-render removes the figure of a row that is no longer in the table."""
    root, args = table2
    figures = root / "tables" / "figures"
    stems = {p.stem for p in figures.glob("table2_*_samples.png")}
    assert stems == {p.stem for p in figures.glob("table2_*_samples.pdf")}
    assert len(stems) == len(ROWS)
    assert {"table2_MT_Diffusion_M_samples", "table2_MT_Diffusion_M_star_samples"} <= stems
    stale = figures / "table2_Renamed_row_samples.png"
    stale.write_bytes(b"old")
    other = figures / "table1_Kept_samples.png"      # another table's figures are not this one's to remove
    other.write_bytes(b"old")
    assert cli(args) == 0                            # re-render from the store
    assert not stale.exists() and other.exists()
    assert {p.stem for p in figures.glob("table2_*_samples.png")} == stems


def test_sample_figures_caption_only_the_classes_that_mattered():
    """Class names above the samples only where the class steered sampling (class-conditional
    ADM) or was generated with the image (M, E); never over an unconditional model's samples."""
    from repro.table_figures import _label_meaning

    gen = {r.name: r.job.deps["samples"] for r in plan(compose("2", "tiny")) if "samples" in r.job.deps}
    assert _label_meaning(gen["ADM (class cond)"]) == "the class it was conditioned on"
    assert _label_meaning(gen["MT-Diffusion-M"]) == _label_meaning(gen["MT-Diffusion-E"]) == "the label generated with it"
    for name in ("ADM (un-cond)", "MT-Diffusion-U", "MT-Diffusion-X", "MT-Diffusion-M*", "MT-Diffusion-E*"):
        assert _label_meaning(gen[name]) is None, name
    g3 = {r.name: r.job.deps["samples"] for r in plan(compose("3", "tiny")) if "samples" in r.job.deps}
    assert _label_meaning(g3["ADM_g (continued, classifier guidance)"]) == "the class it was conditioned on and guided toward"
    assert _label_meaning(g3["MT-Diffusion_g"]) == "the class it was guided toward"
