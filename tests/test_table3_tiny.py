"""Table 3 end to end at the tiny profile; the paper profile's released checkpoints and weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repro.config import compose
from repro.data.registry import load_images
from repro.jobs import samples as samples_format
from repro.jobs.store import JobStore
from repro.plan import plan
from repro.table import cli

from helpers import tiny_table_args

pytestmark = pytest.mark.slow
RESTORE = "MT-Diffusion* (restoration, 10% masking; not comparable)"


@pytest.fixture(scope="module")
def table3(tiny_root):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tiny_root   # tests/conftest.py: shared with the other tiny tables
    overrides = [f"data.root={root / 'data'}"]
    args = tiny_table_args("3", root)
    assert cli(args) == 0
    cfg = compose("3", "tiny", overrides=overrides)
    yield root, cfg, {r.name: r.job for r in plan(cfg)}
    torch.set_num_threads(threads)


def samples(root, job) -> dict:
    d = JobStore(root / "jobs").dir(job.deps["samples"])
    return samples_format.read(d).arrays, d.result()


def test_every_row_with_claims(table3):
    root, _, jobs = table3
    doc = json.loads((root / "tables" / "table3.json").read_text())
    assert {r["row"] for r in doc["rows"]} == set(jobs) and len([j for j in jobs if not j.startswith("ref: ")]) == 10
    for r in doc["rows"]:
        assert all(r["cells"][c]["ours"] is not None for c in ("IS", "FID", "sFID", "Precision", "Recall"))
    assert doc["provenance"]["n_samples"] == 8
    assert [c["status"] in ("held", "not held", "inconclusive") for c in doc["claims"]] == [True, True]


def test_restoration_keeps_the_unmasked_pixels(table3):
    root, cfg, jobs = table3
    arr, res = samples(root, jobs[RESTORE])
    originals = load_images(cfg.data, "test")
    from repro.data.pixels import to_uint8

    truth = to_uint8(originals.images(np.arange(8)))
    kept = arr["mask"].astype(bool)
    assert np.array_equal(arr["images"][kept], truth[kept])
    assert 0 < res["masked_fraction"] <= 2 * (1 / 4) ** 2            # two patches of side res/4, overlaps allowed
    assert not np.array_equal(arr["images"], truth)                     # the holes were filled in


def test_guided_rows_share_noise_and_targets_but_differ(table3):
    root, _, jobs = table3
    for plain, guided in (("MT-Diffusion", "MT-Diffusion_g"), ("ADM (continued training)", "ADM_g (continued, classifier guidance)")):
        a, _ = samples(root, jobs[plain])
        b, _ = samples(root, jobs[guided])
        assert np.array_equal(a["labels"], b["labels"])
        assert not np.array_equal(a["images"], b["images"])
    assert jobs["MT-Diffusion_g"].deps["samples"].deps["classifier"] == jobs["ADM*_g (released, classifier guidance)"].deps["samples"].deps["classifier"]


@pytest.mark.parametrize("profile", ["tiny", "smoke"])
def test_models_are_shared_with_table2(profile):
    """ADM* is Table 2's class-conditional ADM and MT-Diffusion its MT-Diffusion-X where the sizes agree."""
    t2 = {r.name: r.job.deps["samples"].deps["model"] for r in plan(compose("2", profile)) if "samples" in r.job.deps}
    t3 = {r.name: r.job.deps["samples"].deps["model"] for r in plan(compose("3", profile)) if "samples" in r.job.deps}
    assert t3["ADM* (released checkpoint)"] == t2["ADM (class cond)"]
    assert t3["MT-Diffusion"] == t2["MT-Diffusion-X"]
    assert t3["ADM (continued training)"].deps["init"] == t2["ADM (class cond)"]


def paper_args(tmp_path, table: str, *extra: str) -> list[str]:
    for split in ("train", "val"):
        (tmp_path / split / "n01440764").mkdir(parents=True, exist_ok=True)
        __import__("PIL.Image").Image.new("RGB", (8, 8)).save((tmp_path / split / "n01440764") / "a.png")   # decodable: the data checks pass
    return [table, "--profile", "paper", "--store", str(tmp_path / "jobs"), "--out", str(tmp_path / "tables"),
            f"data.root={tmp_path / 'train'}", f"data.test_root={tmp_path / 'val'}", *extra]


def test_paper_profile_names_missing_weights(tmp_path, capsys):
    """Exit 2 before any job, naming the file and where it normally comes from."""
    for table in ("2", "3"):
        assert cli(paper_args(tmp_path, table, f"weights.inception={tmp_path / 'weights-inception-2015-12-05-6726825d.pth'}")) == 2
        err = capsys.readouterr().err
        assert "weights-inception-2015-12-05-6726825d.pth" in err and "torch-fidelity" in err
    fake = tmp_path / "inception.pth"   # holds the weights repro.weights checks (names and shapes)
    import torch

    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3), "fc.weight": torch.zeros(1008, 2048)}, fake)
    assert cli(paper_args(tmp_path, "3", f"weights.inception={fake}",
                          f"weights.adm_128_diffusion={tmp_path / 'ckpt' / '128x128_diffusion.pt'}")) == 2
    err = capsys.readouterr().err
    assert "128x128_diffusion.pt" in err and "guided-diffusion" in err and err.count("\n") == 1
    (tmp_path / "ckpt").mkdir()
    torch.save({"input_blocks.0.0.weight": torch.zeros(256, 3, 3, 3)}, tmp_path / "ckpt" / "128x128_diffusion.pt")
    assert cli(paper_args(tmp_path, "3", f"weights.inception={fake}",
                          f"weights.adm_128_diffusion={tmp_path / 'ckpt' / '128x128_diffusion.pt'}",
                          f"weights.adm_128_classifier={tmp_path / 'ckpt' / '128x128_classifier.pt'}")) == 2
    assert "128x128_classifier.pt" in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists()
