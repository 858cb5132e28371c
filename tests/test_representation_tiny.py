"""Joint image-representation generation (Appendix E.4) end to end at the tiny profile, and its encoder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repro.config import compose
from repro.jobs import samples as samples_format
from repro.jobs.job import topological
from repro.jobs.store import JobStore
from repro.plan import plan
from repro.table import cli

from helpers import tiny_table_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def representation(tiny_root):
    root = tiny_root   # tests/conftest.py: shared with the other tiny tables
    args = tiny_table_args("representation", root)
    assert cli(args) == 0
    return root


def test_cosine_rows_claim_and_grid(representation):
    doc = json.loads((representation / "tables" / "representation.json").read_text())
    rows = {r["row"]: r["cells"]["cosine"]["ours"] for r in doc["rows"]}
    assert set(rows) == {"MT-Diffusion (joint pairs)", "Random pairs"}
    assert all(-1.0 <= v <= 1.0 for v in rows.values())
    assert doc["claims"][0]["status"] in ("held", "not held", "inconclusive")
    grids = list((representation / "tables" / "figures").glob("representation_*_samples.png"))
    assert grids and grids[0].stat().st_size > 0


def test_both_rows_score_the_same_joint_samples(representation):
    """The random-pairs row reuses the joint row's samples (one sample job) and only re-pairs them."""
    # the store holds other tables' jobs too (tests/conftest.py): this table's, through its plan
    cfg = compose("representation", "tiny", overrides=[f"data.root={representation / 'data'}"])
    store = JobStore(representation / "jobs")
    planned = {j.key: j for r in plan(cfg) for j in topological([r.job])}
    jobs = [json.loads((store.dir(j) / "job.json").read_text()) for j in planned.values()]
    evaluations = [j for j in jobs if j["kind"] == "evaluate"]
    assert len(evaluations) == 2 and len([j for j in jobs if j["kind"] == "sample"]) == 1
    assert len({j["deps"]["samples"] for j in evaluations}) == 1
    [sample] = [store.dir(j) for j in planned.values() if j.kind == "sample"]
    arr = samples_format.read(sample)
    assert arr.kind == "joint"
    assert arr["images"].dtype == np.uint8 and arr["representations"].shape == (len(arr["images"]), 256)


def test_encoder_is_the_unet_through_cross_attention_without_gradient():
    from repro.tasks.representation import MODALITY, RepresentationTask, _JointNetwork

    unet = {"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [4],
            "num_head_channels": 8, "dropout": 0.0, "use_scale_shift_norm": True, "resblock_updown": True}
    task = RepresentationTask(resolution=8, rep_dim=6, hidden=5)
    torch.manual_seed(0)
    model = task.build_model(unet, "mt")
    for p in model.parameters():   # leave the zero init, so that every path carries signal
        p.data.add_(0.05 * torch.randn_like(p))
    r = torch.randn(3, 6, requires_grad=True)
    encode = task.encoders(model, "mt")[MODALITY]
    e = encode(r)
    assert e.shape == (3, 3, 8, 8) and not e.requires_grad
    assert not torch.allclose(e, encode(torch.randn(3, 6)))            # E depends on r
    # the joint network gives the network call the representation the sampler just encoded
    joint = _JointNetwork(task, model)
    z, t = torch.randn(3, 3, 8, 8), torch.full((3,), 4)
    enc = joint.encode(r.detach())
    eps, preds, _ = joint(z, t, [enc])
    eps_ref, preds_ref, _ = model(z, t, [enc], context=r.detach())
    torch.testing.assert_close(eps, eps_ref)
    assert preds[MODALITY].shape == (3, 6)
    assert not torch.allclose(eps, model(z, t, [enc], context=torch.randn(3, 6))[0])  # context matters


def test_paper_profile_names_the_missing_clip_encoder(tmp_path, capsys):
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split / "n01440764").mkdir(parents=True)
        __import__("PIL.Image").Image.new("RGB", (8, 8)).save((tmp_path / "imagenet" / split / "n01440764") / "a.png")   # decodable: the data checks pass
    code = cli(["representation", "--profile", "paper", "--store", str(tmp_path / "jobs"),
                f"data.root={tmp_path}/imagenet/train", f"data.test_root={tmp_path}/imagenet/val",
                f"weights.clip={tmp_path / 'clip-vit-h.pt'}"])
    assert code == 2
    assert "clip-vit-h.pt" in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists()
