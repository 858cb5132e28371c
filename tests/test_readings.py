"""The paper's open readings as configuration, and the readings study (issue 11).

Every reading runs at the tiny profile (train + sample of the model it changes, a few steps);
the job keys follow exactly the readings each job reads, so the study's baselines are shared;
the study runs end to end on a two-reading spec; its report says under which readings each
claim holds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from repro.config import compose
from repro.diffusion.network_input import NetworkInput, input_scale
from repro.dispatch import dispatch
from repro.jobs import samples
from repro.jobs.store import JobStore
from repro.jobs.trained import MOMENTS, ReadNetwork, load_denoiser, load_moments, load_trained
from repro.plan import features_job, plan, readings, readings_line, train_job
from repro.report.readings import Reading, evaluate_study
from repro.readings import load_study, run_readings

FAST = ["train.steps=2", "eval.n_images=2", "eval.mask_counts=[1,2,3,4]"]


def _table1_jobs(overrides: list[str]):
    cfg = compose("1", "tiny", overrides=overrides)
    return cfg, {p.name: p.job for p in plan(cfg)}


@pytest.mark.parametrize("reading", [
    "diffusion.weights=paper", "diffusion.weights=constant", "diffusion.weights=zero", "diffusion.weights=bounded",
    "diffusion.network_input=raw", "diffusion.network_input=shifted", "diffusion.network_input=scaled",
    "diffusion.prior=shifted", "eval.composite=true"])
def test_every_table1_reading_runs_at_tiny(reading, tmp_path, monkeypatch):
    """MT-Diffusion-X trained and sampled under the reading; the sampler gets the network the
    training used (the model itself for raw, its wrapper otherwise, the training's moments)."""
    monkeypatch.chdir(tmp_path)
    cfg, jobs = _table1_jobs([reading, *FAST])
    sample = jobs["MT-Diffusion"].deps["samples"]
    dispatch([sample], cfg.cluster, tmp_path / "jobs")
    store = JobStore(tmp_path / "jobs")
    saved = samples.read(store.dir(sample))
    restored = np.stack([saved.restorations(m)["restored"] for m in saved.parts()])
    assert restored.dtype == np.uint8 and restored.shape[1] == 2
    train_dir = store.dir(sample.deps["model"])
    _, net, process, train_cfg = load_denoiser(train_dir)
    _, model, _, _ = load_trained(train_dir)
    value = reading.split("=")[1]
    if reading.startswith("diffusion.network_input") and value != "raw":
        assert isinstance(net, ReadNetwork) and net.reading == value
        assert net.backbone is net.model.backbone          # encoders still reach the U-Net
        assert train_cfg["diffusion"]["network_input"] == value
    else:
        assert type(net) is type(model)                    # the paper's reading: the model itself
    if value == "scaled":
        moments = load_moments(train_dir)
        assert (train_dir / MOMENTS).exists() and moments.matrix.shape == (2, 2)
        torch.testing.assert_close(net.c_in, input_scale(process, moments))
    assert value in readings_line(readings(cfg)) or reading.startswith("eval.composite")


def test_scaled_reading_trains_on_the_saved_moments(tmp_path, monkeypatch):
    """The training loss under `scaled` equals training_losses through NetworkInput built on the
    moments the job saved: sampling and training see the same input scale."""
    from repro.diffusion import training_losses
    from repro.diffusion.loss import draw_steps_and_noise
    from repro.jobs.train import measure_moments
    from repro.jobs.trained import build_diffusion

    monkeypatch.chdir(tmp_path)
    cfg, jobs = _table1_jobs(["diffusion.network_input=scaled", *FAST])
    train = jobs["MT-Diffusion"].deps["samples"].deps["model"]
    dispatch([train], cfg.cluster, tmp_path / "jobs")
    d = JobStore(tmp_path / "jobs").dir(train)
    task, model, process = build_diffusion(train.config)
    data = task.training_data(train.config, {})
    encoders = task.encoders(model, "X")
    again = measure_moments(task, data, encoders, train.config["seed"])
    np.testing.assert_allclose(load_moments(d).matrix, again.matrix)   # deterministic, as on resume
    # the masked image is the image with patches zeroed: E[z0 e] = E[e^2] <= E[z0^2]
    M = again.matrix
    assert M[0, 1] == pytest.approx(M[1, 1]) and M[1, 1] <= M[0, 0]


def test_vlb_weight_and_uint8_rounding_run_at_tiny(tmp_path, monkeypatch):
    """train.vlb_weight trains a learn_sigma model with the hybrid loss (its `vlb` part logged);
    eval.uint8_rounding=truncate exports no byte above rounding's and some below."""
    monkeypatch.chdir(tmp_path)
    ov = ["train.steps=2", "train.log_every=1", "eval.n_images=4", "+unet.learn_sigma=true", "train.vlb_weight=1.0"]
    cfg = compose("2", "tiny", overrides=ov)
    rows = {p.name: p.job for p in plan(cfg)}
    gen = rows["ADM (class cond)"].deps["samples"]
    assert gen.deps["model"].config["train"]["vlb_weight"] == 1.0
    dispatch([gen], cfg.cluster, tmp_path / "jobs")
    store = JobStore(tmp_path / "jobs")
    curve = json.loads((store.dir(gen.deps["model"]) / "loss_curve.json").read_text())
    assert all(np.isfinite(c["vlb"]) and c["vlb"] > 0 for c in curve)
    truncated = {p.name: p.job for p in plan(compose("2", "tiny", overrides=[*ov, "eval.uint8_rounding=truncate"]))}
    gen_t = truncated["ADM (class cond)"].deps["samples"]
    assert gen_t.deps["model"] == gen.deps["model"] and gen_t.key != gen.key   # same model, new export
    dispatch([gen_t], cfg.cluster, tmp_path / "jobs")
    a = samples.read(store.dir(gen))["images"].astype(int)
    b = samples.read(store.dir(gen_t))["images"].astype(int)
    assert (b <= a).all() and (b < a).any() and (a - b).max() <= 1


def _keys(table: str, *overrides: str) -> dict[str, str]:
    """job name -> key of every job of a tiny table's plan."""
    from repro.jobs.job import topological

    rows = plan(compose(table, "tiny", overrides=list(overrides)))
    return {j.name: j.key for j in topological([r.job for r in rows])}


def test_baselines_are_shared_by_the_readings_they_do_not_read():
    """What each reading recomputes, job by job: a baseline's training and samples are the same
    jobs under every reading that does not change them (the study computes them once)."""
    _, readings_list, _ = load_study()
    base1, base2 = _keys("1"), _keys("2")
    changed = {}
    for r in readings_list:
        for t, base in (("1", base1), ("2", base2)):
            if r.name == "composite" and t == "2":
                continue
            keys = _keys(t, *r.overrides)
            changed[r.name, t] = {name for name in base if keys.get(name) != base[name]}
    t1_mt = {"train/mt_x", "sample/MT-Diffusion", "evaluate/MT-Diffusion"}
    for name in ("zero", "bounded", "input-shifted"):
        assert changed[name, "1"] == t1_mt, name
        assert {n for n in changed[name, "2"] if not n.endswith(("ADM (un-cond)", "/adm"))} == changed[name, "2"]
        assert "train/mt_u" in changed[name, "2"] and "train/mt_x" in changed[name, "2"]
    # scaled input changes the baseline's input too: ADM is retrained, Clean-Masked is not
    assert changed["input-scaled", "1"] == t1_mt | {"train/adm", "sample/SDEdit-", "evaluate/SDEdit-"}
    # the prior only reaches Algorithm 1 with modalities: no training, no baseline
    assert changed["prior-shifted", "1"] == {"sample/MT-Diffusion", "evaluate/MT-Diffusion"}
    assert not any(n.startswith(("train/", "features")) or "ADM" in n for n in changed["prior-shifted", "2"])
    # compositing: the two rows with a model to paste into, sampling only
    assert changed["composite", "1"] == {"sample/SDEdit-", "evaluate/SDEdit-", "sample/MT-Diffusion",
                                         "evaluate/MT-Diffusion"}
    assert changed["paper", "1"] == set() and changed["paper", "2"] == set()


def test_network_input_is_read_by_models_with_modalities_and_by_any_model_when_scaled():
    def key(model: str, *ov: str) -> str:
        cfg = compose("1", "tiny", overrides=list(ov))
        return train_job(cfg, model, features_job(cfg)).key

    assert key("adm", "diffusion.network_input=shifted") == key("adm")
    assert key("adm", "diffusion.network_input=scaled") != key("adm")
    assert key("mt_x", "diffusion.network_input=shifted") != key("mt_x")
    assert key("adm", "train.vlb_weight=1.0") == key("adm")          # no learned variance to train
    assert key("adm", "+unet.learn_sigma=true", "train.vlb_weight=1.0") != key("adm", "+unet.learn_sigma=true")


def test_train_body_reads_exactly_its_key_under_every_network_input(tmp_path, monkeypatch):
    """tests/test_job_reads.py's recorder on the train bodies under non-default readings."""
    from test_job_reads import _run_recorded, covered, leaves, on_the_way

    from repro.jobs.runner import declared_reads

    monkeypatch.chdir(tmp_path)
    store = JobStore(tmp_path / "jobs")
    for ov in (["diffusion.network_input=scaled"], ["diffusion.network_input=shifted"],
               ["+unet.learn_sigma=true", "train.vlb_weight=1.0"]):
        table = "2" if "+unet.learn_sigma=true" in ov else "1"
        cfg = compose(table, "tiny", overrides=["train.steps=2", *ov])
        models = ("adm_cond",) if table == "2" else ("adm", "mt_x")
        for m in models:
            job = train_job(cfg, m, features_job(cfg))
            reads = _run_recorded(job, store)
            declared = set(declared_reads(job.kind, job.config))
            assert {p for p in reads if not (covered(p, declared) or on_the_way(p, declared))} == set(), (ov, m)
            assert {p for p in leaves(job.config) if not covered(p, reads)} == set(), (ov, m)


def test_study_verdicts_name_the_readings_under_which_each_claim_holds():
    """Hand-made cells without per-image data (point values, as for jobs older than cells.npz):
    MT-Diffusion beats Clean-Masked under `b` on both seeds; under `c` the seeds disagree, which
    is inconclusive (not held on the mean, as the point rule once said)."""
    recs = []
    for reading, mt in (("a", [9.0, 9.0]), ("b", [0.1, 0.2]), ("c", [0.05, 0.9])):
        for seed, value in enumerate(mt):
            for i, col in enumerate(("Mask-5", "Mask-10", "Mask-15", "Mask-20")):
                recs += [{"table": "1", "reading": reading, "seed": seed, "row": "Clean-Masked", "column": col,
                          "value": 0.5 + i}, {"table": "1", "reading": reading, "seed": seed, "row": "SDEdit-",
                                              "column": col, "value": 0.4 + i},
                         {"table": "1", "reading": reading, "seed": seed, "row": "MT-Diffusion", "column": col,
                          "value": value + i}]
    cells = pd.DataFrame(recs)
    rs = [Reading(n, (), tables=("1",)) for n in "abc"]
    claims = {c["text"]: c for c in evaluate_study(cells, rs, {"1": ["Clean-Masked", "SDEdit-", "MT-Diffusion"]})}
    c = claims["MT-Diffusion < Clean-Masked for every mask count"]
    assert c["holds_under"] == ["b"] and c["inconclusive_under"] == ["c"]
    assert c["by_reading"]["b"]["held_seeds"] == 2 and c["by_reading"]["c"]["held_seeds"] == 1
    assert c["by_reading"]["c"]["seed_status"] == {"0": "held", "1": "not held"}
    assert c["by_reading"]["a"]["status"] == "not held"
    assert c["by_reading"]["b"]["seeds"]["0"]["test"] == "point values"
    assert claims["SDEdit- > Clean-Masked for every mask count"]["holds_under"] == []


@pytest.mark.slow
def test_readings_study_runs_at_tiny_and_shares_baselines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "readings.yaml"
    spec.write_text(
        "study:\n  key: readings\n  title: tiny\n  seeds: [0]\n  tables:\n    '1': [Clean-Masked, SDEdit-, MT-Diffusion]\n"
        "  readings:\n    - {name: paper, overrides: []}\n    - {name: zero, overrides: [diffusion.weights=zero]}\n"
        "    - {name: composite, overrides: [eval.composite=true]}\n")
    from repro.table import validate

    paths = run_readings("tiny", "local", tuple(FAST), tmp_path / "jobs", tmp_path / "tables", spec_path=spec,
                         check=validate)
    doc = json.loads(Path(paths["json"]).read_text())
    # paper: features, 2 trainings, 3 samples, 3 evaluations; zero adds MT's training, sample and
    # evaluation; composite adds SDEdit-'s and MT's samples and evaluations: 9 + 3 + 4
    assert doc["provenance"]["jobs"] == 16
    assert doc["provenance"]["readings"]["zero"]["weights"] == "zero"
    assert doc["provenance"]["readings"]["composite"]["composite"] is True
    assert {c["text"] for c in doc["claims"]} >= {"MT-Diffusion < SDEdit- for every mask count"}
    assert all(set(c["by_reading"]) == {"paper", "zero", "composite"} for c in doc["claims"])
    # each seed tested as the tables test (paired over the same images), its interval in the JSON
    test = doc["claims"][0]["by_reading"]["zero"]["seeds"]["0"]
    assert test["test"] == "interval" and test["comparisons"] and all(
        "paired" in c["test"] and c["low"] <= c["difference"] <= c["high"] for c in test["comparisons"])
    csv = pd.read_csv(paths["csv"])
    assert csv[["low", "high"]].notna().all().all() and (csv.low <= csv.high).all()   # each seed's 95% interval
    assert len(csv) == 3 * 3 * 4
    clean = csv[csv.row == "Clean-Masked"].groupby("column").value.nunique()
    assert (clean == 1).all()                          # one Clean-Masked job behind every reading
    for ext in ("md", "tex"):
        assert "For each paper claim" in Path(paths["md"]).read_text() and Path(paths[ext]).stat().st_size


@pytest.mark.parametrize("override, says", [
    ("diffusion.network_input=centred", "diffusion.network_input='centred'"),
    ("eval.uint8_rounding=floor", "eval.uint8_rounding='floor'"),
    ("train.vlb_weight=1.0", "unet.learn_sigma=true"),
])
def test_bad_readings_exit_2_with_one_line(override, says, tmp_path, capsys):
    from repro.table import cli

    assert cli(["1", "--profile", "tiny", "--store", str(tmp_path / "j"), "--out", str(tmp_path / "t"), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "j").exists()


def test_released_checkpoints_ignore_the_network_input(tmp_path):
    """A released ADM checkpoint was trained on the raw input: no reading re-keys (or re-reads) it,
    while the same network trained here under `scaled` is another model."""
    from repro.config import to_dict
    from repro.plan import released_job

    ckpt = tmp_path / "128x128_diffusion.pt"
    ckpt.write_bytes(b"\0")
    keys = {}
    for v in ("raw", "scaled"):
        cfg = compose("3", "paper", overrides=[f"weights.adm_128_diffusion={ckpt}", f"diffusion.network_input={v}"])
        job = released_job(cfg, "adm_star", to_dict(cfg.models.adm_star))
        keys[v] = job.key
        assert "network_input" not in job.config["diffusion"]
    assert keys["raw"] == keys["scaled"]
