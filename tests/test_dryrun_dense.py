"""The dry run prices DiffusionMTL's jobs (repro/bench/dense_flops.py, repro/dryrun.py): FLOPs
per training image at the label setting's labelled tasks, x batch x steps; one forward per
test image; the counts agree with the real training step's loss graph."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from repro.bench.dense_flops import DenseFlops, count_dense, mean_labels
from repro.bench.measure import count_flops
from repro.config import compose, to_dict
from repro.table import cli


def _tiny_config(variant: str) -> dict:
    cfg = to_dict(compose("diffusionmtl", "tiny"))
    return {"seed": cfg["seed"], "data": {**cfg["data"], "setting": "one_label"}, "task": cfg["task"],
            "model": cfg["models"][variant], "train": cfg["train"]}


@pytest.mark.parametrize("variant", ["feature"])
def test_meta_count_equals_the_real_training_steps_flops(variant):
    """Independent path: the task's own loss (repro.tasks.dense, on real CPU tensors, labels as a
    one-label batch of one image) back-propagated under the FLOP counter, against count_dense's
    meta-device graph, per labelled task and with every task labelled. Attention on the math
    backend: the CPU's fused attention kernel is not one FlopCounterMode counts, while the meta
    device decomposes attention into the matmuls a GPU kernel does."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from repro.jobs.trained import build_dense

    config = _tiny_config(variant)
    counted = count_dense(config)
    torch.manual_seed(0)
    task, model = build_dense(config)
    res = config["data"]["resolution"]
    names = tuple(task.tasks)
    batch = {"image": torch.randn(1, 3, res, res), "semseg": torch.zeros(1, res, res, dtype=torch.long),
             "human_parts": torch.ones(1, res, res, dtype=torch.long), "sal": torch.zeros(1, res, res, dtype=torch.long),
             "edge": torch.zeros(1, res, res, dtype=torch.long), "normals": torch.ones(1, 3, res, res)}
    model.train()   # as a training step (the tiny stride-32 map is 2 x 2: batch norm takes one image)

    def real(labelled: list[bool]) -> int:
        b = {**batch, "labelled": torch.tensor([labelled])}
        with sdpa_kernel(SDPBackend.MATH):
            return count_flops(lambda: task.loss(model, b, torch.Generator().manual_seed(0))[0].backward())

    one = [real([j == i for j in range(len(names))]) for i in range(len(names))]
    assert counted.train_one == pytest.approx(sum(one) / len(one))
    assert counted.train_all == real([True] * len(names))
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        assert counted.forward == count_flops(lambda: model.eval()(batch["image"], None))
    assert counted.params == sum(p.numel() for p in model.parameters())


def test_labels_per_image_interpolate_between_one_and_all():
    f = DenseFlops(train_one=10.0, train_all=50.0, forward=7.0, params=1, tasks=5)
    assert (f.train(1), f.train(5), f.train(None), f.train(2)) == (10.0, 50.0, 50.0, 20.0)   # +10 per label


def test_mean_labels_from_the_settings_and_the_authors_files(tmp_path):
    from repro.data.partial_labels import save_nyud_mapping, save_pascal_mapping

    assert mean_labels({"name": "dense_scenes", "setting": "one_label"}) == 1.0
    assert mean_labels({"name": "dense_scenes", "setting": "random_labels"}) is None   # unknown: upper bound
    pascal = {"name": "pascal_context", "setting": "random_labels", "mapping_dir": str(tmp_path)}
    assert mean_labels(pascal) is None                                                 # file not there yet
    save_pascal_mapping(tmp_path / "new_randomlabels.pth", {"a": [1, 0, 0, 0, 0], "b": [1, 1, 1, 0, 0]})
    assert mean_labels(pascal) == 2.0
    save_nyud_mapping(tmp_path / "randomlabels.pth", np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 1, 0]]))
    assert mean_labels({"name": "nyud_v2", "setting": "random_labels", "mapping_dir": str(tmp_path)}) == 1.75


def test_tiny_dry_run_prices_every_dense_training_and_prediction(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = cli(["diffusionmtl", "--profile", "tiny", "--dry-run", "--store", str(tmp_path / "jobs"),
              "--out", str(tmp_path / "tables")])
    out = capsys.readouterr().out
    assert rc == 0 and list(tmp_path.rglob("*")) == []          # nothing written
    blocks = re.findall(r"^(dense_\w+) +(\S+).*\n +resources: .*compute ([\d.e+-]+) EFLOP, ([^|]+)\|.*\n +\((.*)\)",
                        out, re.M)
    kinds = {}
    for kind, name, eflop, hours, note in blocks:
        kinds.setdefault(kind, []).append((float(eflop), note))
    cfg = compose("diffusionmtl", "tiny")
    n_rows = sum(r.setting == cfg.setting for r in cfg.rows)
    assert len(kinds["dense_train"]) == len(kinds["dense_predict"]) == n_rows
    steps, batch = cfg.train.steps, cfg.train.batch_size
    for eflop, note in kinds["dense_train"]:
        per = float(re.search(r"([\d.]+) GFLOP/image fwd\+bwd \(1\.00 labelled tasks per image\)", note).group(1))
        assert eflop > 0 and f"x {batch} x {steps} steps" in note
        assert eflop * 1e18 == pytest.approx(per * 1e9 * batch * steps, rel=0.06)   # the note's rounding
    for eflop, note in kinds["dense_predict"]:
        assert eflop > 0 and f"x {cfg.eval.n_images} test images" in note
    assert "not counted (feature extraction / metrics / classifier)" in out            # dense_evaluate
    assert "missing inputs: none" in out
