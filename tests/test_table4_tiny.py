"""Table 4 end to end at the tiny profile, the label-map decoding path, and the paper profile's checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repro.config import available_tables, compose
from repro.jobs.store import JobStore
from repro.plan import plan
from repro.table import cli

from helpers import tiny_table_args

pytestmark = pytest.mark.slow

CITED = ("CycleGAN (Zhu et al., 2017)", "pix2pix (Isola et al., 2017)", "InternImage-H (Wang et al., 2022)")
COLUMNS = ("per_pixel_acc", "per_class_acc", "class_IoU")


@pytest.fixture(scope="module")
def table4(tiny_root):
    root = tiny_root   # tests/conftest.py: shared with the other tiny tables
    args = tiny_table_args("4", root)
    assert cli(args) == 0
    return root, args


def test_rows_metrics_cited_rows_and_claim(table4):
    root, _ = table4
    doc = json.loads((root / "tables" / "table4.json").read_text())
    rows = {r["row"]: r for r in doc["rows"]}
    for name in ("Single-task diffusion", "MT-Diffusion"):
        assert not rows[name]["cited"]
        for col in COLUMNS:
            assert 0.0 <= rows[name]["cells"][col]["ours"] <= 1.0
    for name in CITED:   # other papers' numbers: shown, marked, never ours
        assert rows[name]["cited"] and all(c["ours"] is None for c in rows[name]["cells"].values())
    assert "cited, not reproduced here" in (root / "tables" / "table4.md").read_text()
    [claim] = doc["claims"]
    assert claim["text"] == "MT-Diffusion beats single-task diffusion on all three metrics"
    assert claim["status"] in ("held", "not held", "inconclusive")
    assert (root / "tables" / "figures" / "table4_MT_Diffusion_samples.png").stat().st_size > 0


def test_scores_come_from_one_confusion_matrix_over_every_test_pixel(table4):
    root, _ = table4
    cfg = compose("4", "tiny", overrides=[f"data.root={root / 'data'}"])
    store = JobStore(root / "jobs")   # shared with other tables (tests/conftest.py): this table's jobs by its plan
    evaluations = [r.job for r in plan(cfg) if r.job is not None and r.job.kind == "evaluate"]
    assert len(evaluations) == 2   # Single-task diffusion, MT-Diffusion
    for job in evaluations:
        res = store.dir(job).result()
        m = np.array(res["confusion_matrix"])
        assert m.shape == (13, 13)                       # the embedded semantic classes
        assert m.sum() == res["n_images"] * cfg.data.resolution ** 2   # nothing ignored in the embedded maps
        assert res["values"]["per_pixel_acc"] == pytest.approx(np.trace(m) / m.sum())


def test_ground_truth_label_images_decode_to_perfect_scores(tmp_path):
    """Colourise -> uint8 -> nearest palette colour is lossless: the true label images score 1."""
    from repro.jobs.evaluate import segmentation
    from repro.tasks.translation import TranslationTask

    cfg = {"data": {"name": "embedded", "root": str(tmp_path / "data"), "resolution": 16, "n_train": 16,
                    "n_test": 12, "seed": 3},
           "task": {"name": "translation", "source": "photo", "target": "labels"},
           "row": {"name": "truth", "method": "ground_truth"}, "eval": {"n_images": 12},
           "sample": {"batch_size": 5, "clip_denoised": True}, "diffusion": {"prior": "paper"}, "seed": 0,
           "table": {"columns": list(COLUMNS)}}
    from repro.data.registry import dataset
    from repro.jobs import samples as samples_format

    arrays = TranslationTask.from_config(cfg).sample(cfg, None, None)
    assert set(arrays) == {"source", "truth", "generated", "ids_true", "ids_pred"} and len(arrays["source"]) == 12
    samples_format.write(tmp_path, "translations", arrays)
    res = {"n_images": 12, "method": "ground_truth", "num_classes": len(dataset(cfg["data"]).palette)}

    class Dir:
        def __truediv__(self, name):
            return tmp_path / name

        def result(self):
            return res

    scores = segmentation(cfg, {"samples": Dir()})["values"]
    assert scores == pytest.approx({c: 1.0 for c in COLUMNS})


def test_mt_translation_reads_the_head_at_the_last_step():
    """sample_known_z returns the head's output on z_0 noised by eq. 4 at step 0."""
    from repro.diffusion import MTProcess, sample_known_z
    from repro.tasks.translation import TARGET

    process = MTProcess.from_config("linear", 100, "paper", 1, respacing="5")
    z0 = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    calls = []

    def model(z, t, e):   # head: a fixed function of z_t; records the steps it saw
        calls.append(int(t[0]))
        return torch.zeros_like(z), {TARGET: torch.tanh(2 * z)}

    x0 = torch.randn(z0.shape, generator=torch.Generator().manual_seed(2))
    out = sample_known_z(model, process, z0, x0, TARGET, torch.Generator().manual_seed(3))
    assert calls == sorted(calls, reverse=True) and len(calls) == 5 and calls[-1] == 0
    # replay: the same noise draws, the estimate threaded through eq. 4 by hand
    g, x = torch.Generator().manual_seed(3), x0
    for k in range(4, -1, -1):
        x = torch.tanh(2 * process.q_sample(z0, [x], k, torch.randn(z0.shape, generator=g)))
    torch.testing.assert_close(out, x)


def test_paper_profile_names_the_missing_autoencoder(tmp_path, capsys):
    (tmp_path / "cityscapes").mkdir()
    code = cli(["4", "--profile", "paper", "--store", str(tmp_path / "jobs"), f"data.root={tmp_path / 'cityscapes'}",
                f"task.autoencoder={tmp_path / 'kl-f8.ckpt'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "kl-f8.ckpt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "jobs").exists()   # nothing ran


def test_paper_profile_names_the_missing_dataset(tmp_path, capsys):
    assert cli(["4", "--profile", "paper", f"data.root={tmp_path / 'nowhere'}"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_kl_f8_loader_reads_a_diffusers_state_dict(tmp_path):
    """The paper-profile latent codec round-trips through a saved AutoencoderKL (small layout, random weights)."""
    from diffusers import AutoencoderKL

    from repro.nn.autoencoder import LatentCodec, kl_f8

    small = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                 latent_channels=4, norm_num_groups=4, sample_size=16)
    torch.manual_seed(0)
    ref = AutoencoderKL(**small).eval()
    torch.save(ref.state_dict(), tmp_path / "vae.pt")
    codec = LatentCodec(kl_f8(tmp_path / "vae.pt", config=small), scale=0.5)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(z, 0.5 * ref.encode(x).latent_dist.mean)
    assert codec.decode(z).shape == x.shape


def test_named_specs_are_tables_of_the_cli():
    names = available_tables()
    assert {"4", "night2day", "representation"} <= set(names)
    assert names.index("1") < names.index("night2day")
