"""night2day (Appendix E.1) end to end at the tiny profile: FID / IS of translated day images."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from repro.config import compose
from repro.jobs import samples as samples_format
from repro.jobs.job import topological
from repro.jobs.store import JobStore
from repro.plan import plan
from repro.table import cli

from helpers import tiny_table_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def night2day(tiny_root):
    root = tiny_root   # tests/conftest.py: shared with the other tiny tables
    args = tiny_table_args("night2day", root)
    assert cli(args) == 0
    return root


def _jobs(root, kind):
    """This table's jobs of `kind` (the store holds other tables' jobs too): through its plan."""
    cfg = compose("night2day", "tiny", overrides=[f"data.root={root / 'data'}"])
    store = JobStore(root / "jobs")
    jobs = {j.key: j for r in plan(cfg) for j in topological([r.job])}
    for job in jobs.values():
        if job.kind == kind:
            d = store.dir(job)
            yield json.loads((d / "job.json").read_text()), d


def test_rows_and_claims(night2day):
    doc = json.loads((night2day / "tables" / "night2day.json").read_text())
    rows = {r["row"]: r["cells"] for r in doc["rows"]}
    assert set(rows) == {"MT-Diffusion", "Single-task diffusion", "Ground truth"}
    for name in ("MT-Diffusion", "Single-task diffusion"):
        assert math.isfinite(rows[name]["FID"]["ours"]) and rows[name]["FID"]["ours"] >= 0
    assert rows["Ground truth"]["FID"]["ours"] is None       # the FID reference itself
    for cells in rows.values():
        assert cells["IS"]["ours"] >= 1.0 - 1e-6             # IS is at least 1 by definition
    assert [c["status"] in ("held", "not held", "inconclusive") for c in doc["claims"]] == [True, True]
    assert doc["provenance"]["feature_extractor"].startswith("FeatureNet")


def test_samples_are_day_images_of_the_test_night_scenes(night2day):
    """Every row translates the same test nights; the ground-truth row's samples are the real days."""
    sources, truths = [], {}
    for job, d in _jobs(night2day, "sample"):
        arr = samples_format.read(d)
        sources.append(arr["source"])
        truths[job["config"]["row"]["method"]] = arr
        assert arr["generated"].shape == arr["truth"].shape == arr["source"].shape
    for s in sources[1:]:
        np.testing.assert_array_equal(s, sources[0])
    gt = truths["ground_truth"]
    np.testing.assert_array_equal(gt["generated"], gt["truth"])
    # night is darker than day in the embedded renderings: source and target are not swapped
    assert gt["source"].mean() < gt["truth"].mean()


def test_paper_profile_names_missing_weights(tmp_path, capsys):
    (tmp_path / "night2day" / "train").mkdir(parents=True)
    base = ["night2day", "--profile", "paper", "--store", str(tmp_path / "jobs"), f"data.root={tmp_path / 'night2day'}"]
    assert cli(base + [f"weights.inception={tmp_path / 'inception.pth'}"]) == 2
    assert "inception.pth" in capsys.readouterr().err
    (tmp_path / "inception.pth").write_bytes(b"")
    assert cli(base + [f"weights.inception={tmp_path / 'inception.pth'}", f"task.autoencoder={tmp_path / 'vae.ckpt'}"]) == 2
    assert "vae.ckpt" in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists()
