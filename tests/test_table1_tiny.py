"""Table 1 end to end at the tiny profile: spec -> jobs -> store -> tables/table1.*"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.table import cli

from helpers import tiny_table_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def table1(tiny_root):
    root = tiny_root   # tests/conftest.py: shared with the other tiny tables
    args = tiny_table_args("1", root)
    assert cli(args) == 0
    return root, args


def test_writes_every_output_with_provenance_and_claims(table1):
    root, _ = table1
    for ext in ("md", "tex", "csv", "json"):
        assert (root / "tables" / f"table1.{ext}").stat().st_size > 0
    doc = json.loads((root / "tables" / "table1.json").read_text())
    rows = {r["row"]: r for r in doc["rows"]}
    assert set(rows) >= {"Clean-Masked", "SDEdit-", "MT-Diffusion"}
    for name in ("Clean-Masked", "SDEdit-", "MT-Diffusion"):
        for col in ("Mask-5", "Mask-10", "Mask-15", "Mask-20"):
            cell = rows[name]["cells"][col]
            # lpips=False sums, over 5 stages, squared distances of unit vectors: at most 5 * 4
            assert cell["ours"] is not None and 0.0 <= cell["ours"] <= 20.0
            assert cell["paper"] is not None
    assert doc["provenance"]["profile"] == "tiny"
    assert doc["provenance"]["git_commit"]
    assert len(doc["claims"]) == 4
    assert all(c["status"] in ("held", "not held", "not evaluable") for c in doc["claims"])


def test_loss_by_t_curves_of_both_models(table1):
    """tables/curves/table1_loss_by_t: 10 buckets per model; inside/outside the mask for both;
    the MT-Diffusion-X head's loss per bucket."""
    import pandas as pd

    root, _ = table1
    frame = pd.read_csv(root / "tables" / "curves" / "table1_loss_by_t.csv")
    assert set(frame["run"]) == {"adm", "mt_x"}
    for run, quantities in (("adm", {"eps", "eps_inside", "eps_outside"}),
                            ("mt_x", {"eps", "eps_inside", "eps_outside", "masked"})):
        part = frame[frame["run"] == run]
        assert set(part["quantity"]) == quantities
        assert (part.groupby("quantity").size() == 10).all()
        assert part["value"].notna().all() and (part["value"] > 0).all()
    for ext in ("png", "pdf"):
        assert (root / "tables" / "curves" / f"table1_loss_by_t.{ext}").stat().st_size > 0


def test_lpips_learning_curves_of_the_trained_rows(table1):
    """tables/curves/table1_efficiency: SDEdit- and MT-Diffusion at every EMA snapshot (tiny keeps
    one, after 3 of 6 steps), each curve ending at the table's own number."""
    import pandas as pd

    root, _ = table1
    frame = pd.read_csv(root / "tables" / "curves" / "table1_efficiency.csv")
    assert sorted(map(tuple, frame[["row", "training_step"]].values.tolist())) == [
        ("MT-Diffusion", 3), ("MT-Diffusion", 6), ("SDEdit-", 3), ("SDEdit-", 6)]
    doc = json.loads((root / "tables" / "table1.json").read_text())
    for r in doc["rows"]:
        if r["row"] in ("SDEdit-", "MT-Diffusion"):
            last = frame[(frame["row"] == r["row"]) & (frame["training_step"] == 6)].iloc[0]
            assert last["Mask-5"] == pytest.approx(r["cells"]["Mask-5"]["ours"], rel=1e-4)
    early = frame[frame["training_step"] == 3]
    assert early[["Mask-5", "Mask-20"]].notna().all().all()


def test_clean_masked_lpips_grows_with_mask_count(table1):
    """More masked patches -> further from the original: true by construction of the masks."""
    root, _ = table1
    doc = json.loads((root / "tables" / "table1.json").read_text())
    row = next(r for r in doc["rows"] if r["row"] == "Clean-Masked")["cells"]
    vals = [row[c]["ours"] for c in ("Mask-5", "Mask-10", "Mask-15", "Mask-20")]
    assert vals == sorted(vals) and vals[0] > 0


def test_rerun_uses_the_store_and_reproduces_the_table(table1, capsys):
    root, args = table1
    before = (root / "tables" / "table1.csv").read_text()
    capsys.readouterr()
    assert cli(args) == 0
    assert "0 run" in capsys.readouterr().out
    assert (root / "tables" / "table1.csv").read_text() == before


def test_job_folders_are_self_describing(table1):
    root, _ = table1
    for d in (root / "jobs").iterdir():
        if d.name.startswith("_"):
            continue
        for f in ("job.json", "status.json", "log.txt", "result.json"):
            assert (d / f).exists(), (d, f)
        assert json.loads((d / "status.json").read_text())["state"] == "done"
        assert not list(d.glob(".*.tmp"))


def test_a_fresh_store_in_another_process_gives_identical_values(table1, tmp_path):
    """Same command, same numbers: a second fresh-store run (its own process, data and store, the
    same thread count) reproduces every value bit for bit; each job records its threads."""
    import os
    import subprocess
    import sys
    import torch

    root, _ = table1
    repo = Path(__file__).resolve().parents[1]
    args = tiny_table_args("1", tmp_path)
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-m", "repro.table", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]

    def values(folder: Path) -> dict:
        doc = json.loads((folder / "table1.json").read_text())
        return {r["row"]: {c: cell["ours"] for c, cell in r["cells"].items()} for r in doc["rows"]}

    assert values(tmp_path / "tables") == values(root / "tables")
    for result in (tmp_path / "jobs").glob("*/result.json"):
        prov = json.loads(result.read_text())["provenance"]
        assert prov["torch_threads"] == torch.get_num_threads() and prov["torch_interop_threads"] >= 1
