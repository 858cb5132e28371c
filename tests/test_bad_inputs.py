"""One error policy for every CLI: bad input exits 2 with one line on stderr, no traceback,
and nothing written (no job folder, no tables file, no report directory).

Each case runs the command in-process (the same `repro.cli.run` its `__main__` calls) from an
empty temporary folder with --store/--out there, so "nothing written" is checked as "the
folder is still empty". Most cases fail at validation (repro/schema.py), in well under a second.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from repro.cli import run

TABLE = ["--profile", "tiny"]


def _command(name: str):
    if name == "table":
        from repro.table import main
    elif name == "figure":
        from repro.figure import main
    elif name == "status":
        from repro.status import main
    elif name == "bench":
        from repro.bench.__main__ import main
    elif name == "report":
        from repro.report.__main__ import main
    elif name == "data":
        from repro.data.__main__ import main
    else:
        from repro.features import main
    return main


def _paths(name: str) -> list[str]:
    """--store/--out (whichever the command takes), inside the test's folder."""
    return {"table": ["--store", "jobs", "--out", "tables"], "figure": ["--store", "jobs", "--out", "tables"],
            "status": ["--store", "jobs"], "features": ["--store", "jobs", "--out", "tables"]}.get(name, [])


CASES = [
    # (command, arguments, a fragment the one line must hold)
    ("table", ["9"], "unknown table '9'"),
    ("table", ["1", "--profile", "huge"], "unknown profile 'huge'"),
    ("table", ["1", *TABLE, "--cluster", "nowhere"], "nowhere"),
    ("table", ["1", *TABLE, "train.stepz=3"], "train.stepz"),
    ("table", ["1", *TABLE, "train.steps=abc"], "train.steps"),
    ("table", ["1", *TABLE, "train.steps=2.5"], "train.steps takes an integer"),
    ("table", ["1", *TABLE, "train.steps=true"], "train.steps"),
    ("table", ["1", *TABLE, "train.steps=0"], "train.steps takes an integer >= 1"),
    ("table", ["1", *TABLE, "train.steps=-5"], "train.steps"),
    ("table", ["1", *TABLE, "train.steps=[1,2]"], "train.steps"),
    ("table", ["1", *TABLE, "train.steps="], "train.steps"),
    ("table", ["1", *TABLE, "train.batch_size=0"], "train.batch_size"),
    ("table", ["1", *TABLE, "train.lr=0"], "train.lr"),
    ("table", ["1", *TABLE, "train.lr=-0.001"], "train.lr"),
    ("table", ["1", *TABLE, "train.lr=nan"], "train.lr"),
    ("table", ["1", *TABLE, "train.ema_rate=5"], "train.ema_rate"),
    ("table", ["1", *TABLE, "train.ema_rate=1.0"], "train.ema_rate"),
    ("table", ["1", *TABLE, "train.ema_rate=-0.1"], "train.ema_rate"),
    ("table", ["1", *TABLE, "train.checkpoint_every=0"], "train.checkpoint_every"),
    ("table", ["1", *TABLE, "train.log_every=0"], "train.log_every"),
    ("table", ["1", *TABLE, "train.snapshot_every=-1"], "train.snapshot_every"),
    ("table", ["1", *TABLE, "+train.sleep_s=-1.0"], "train.sleep_s"),
    ("table", ["1", *TABLE, "+train.bogus=1"], "unknown config key(s) train.bogus"),
    ("table", ["1", *TABLE, "+bogus=1"], "unknown config key(s) bogus"),
    ("table", ["1", *TABLE, "+eval.foo=bar"], "eval.foo"),
    ("table", ["1", *TABLE, "eval.n_images=1000000"], "more than the 32 test images"),
    ("table", ["1", *TABLE, "eval.n_images=0"], "eval.n_images"),
    ("table", ["1", *TABLE, "eval.batch_size=0"], "eval.batch_size"),
    ("table", ["1", *TABLE, "eval.composite=3"], "eval.composite"),
    ("table", ["1", *TABLE, "eval.mask_counts=[5,10,15,200]"], "eval.mask_counts"),
    ("table", ["1", *TABLE, "eval.mask_counts=[5,10]"], "has 2 entries but the table has 4 columns"),
    ("table", ["1", *TABLE, "task.train_patches=[3,1]"], "task.train_patches"),
    ("table", ["1", *TABLE, "diffusion.schedule=quadratic"], "diffusion.schedule takes one of linear, cosine"),
    ("table", ["1", *TABLE, "diffusion.weights=heavy"], "diffusion.weights takes one of"),
    ("table", ["1", *TABLE, "diffusion.prior=gaussian"], "diffusion.prior takes one of"),
    ("table", ["1", *TABLE, "diffusion.T=0"], "diffusion.T"),
    ("table", ["1", *TABLE, "diffusion.T=2.5"], "diffusion.T"),
    ("table", ["1", *TABLE, "diffusion.lam=-1"], "diffusion.lam"),
    ("table", ["1", *TABLE, "diffusion.network_input=squashed"], "diffusion.network_input takes one of"),
    ("table", ["1", *TABLE, "sample.steps=1000"], "must be at most T"),
    ("table", ["1", *TABLE, "sample.steps=0"], "sample.steps"),
    ("table", ["1", *TABLE, "sample.batch_size=0"], "sample.batch_size"),
    ("table", ["1", *TABLE, "sample.clip_denoised=maybe"], "sample.clip_denoised"),
    ("table", ["1", *TABLE, "data.resolution=18"], "does not divide data.resolution=18"),
    ("table", ["1", *TABLE, "unet.channel_mult=[1,2,2,2,2,2]"], "does not halve 5 times"),
    ("table", ["1", *TABLE, "unet.channel_mult=[1,0]"], "unet.channel_mult"),
    ("table", ["1", *TABLE, "unet.dropout=1.5"], "unet.dropout"),
    ("table", ["1", *TABLE, "unet.num_res_blocks=0"], "unet.num_res_blocks"),
    ("table", ["1", *TABLE, "unet.model_channels=8.5"], "unet.model_channels"),
    ("table", ["1", *TABLE, "unet.use_scale_shift_norm=1"], "unet.use_scale_shift_norm"),
    ("table", ["1", *TABLE, "seed=-1"], "seed"),
    ("table", ["1", *TABLE, "seed=abc"], "seed"),
    ("table", ["1", *TABLE, "data.n_test=0"], "data.n_test"),
    ("table", ["1", *TABLE, "features.steps=0"], "features.steps"),
    ("table", ["1", *TABLE, "features.lr=-1"], "features.lr"),
    ("table", ["1", *TABLE, "notkeyvalue"], "is not key=value"),
    ("table", ["1", *TABLE, "--bogus-option"], "--bogus-option"),
    ("table", [], "Missing argument"),
    ("table", ["1", "--profile", "paper", "data.root=/nonexistent/imagenet"], "/nonexistent/imagenet"),
    ("table", ["2", *TABLE, "train.steps=0"], "train.steps"),
    ("table", ["3", *TABLE, "eval.isc_splits=0"], "eval.isc_splits"),
    ("table", ["4", *TABLE, "guidance_scale=-1.0"], "guidance_scale"),
    # values only a job body read before: now refused by the schema before any job
    ("table", ["1", *TABLE, "+train.autocast=fp16"], "train.autocast takes one of none, bf16, true, false"),
    ("table", ["1", *TABLE, "+train.autocast=1"], "train.autocast takes one of"),
    ("table", ["1", *TABLE, "+sample.autocast=half"], "sample.autocast takes one of"),
    ("table", ["2", *TABLE, "eval.uint8_rounding=floor"], "eval.uint8_rounding takes one of round, truncate"),
    ("table", ["2", *TABLE, "+sample.sampler=euler"], "sample.sampler takes one of ancestral, ddim"),
    # cluster settings (checked by the dispatcher before any job; they mix names and numbers)
    ("table", ["1", *TABLE, "cluster.workers=0"], "cluster.workers=0 must be a positive integer or auto"),
    ("table", ["1", *TABLE, "cluster.threads=-2"], "cluster.threads=-2"),
    ("table", ["1", *TABLE, "cluster.deterministic=maybe"], "cluster.deterministic='maybe' takes true, false or null"),
    ("status", ["9"], "unknown table '9'"),
    ("status", ["1", *TABLE, "+train.bogus=1"], "train.bogus"),
    ("status", ["1", *TABLE, "train.steps=2.5"], "train.steps"),
    ("status", ["1", *TABLE, "--lines", "abc"], "--lines"),
    ("figure", ["7"], "unknown figure '7'"),
    ("figure", ["6", *TABLE, "train.steps=0"], "train.steps"),
    ("figure", ["6", "--profile", "huge"], "unknown profile 'huge'"),
    ("bench", ["--profile", "huge"], "unknown profile 'huge'"),
    ("bench", ["--iters", "0"], "--iters"),
    ("bench", ["--threads", "-1"], "--threads"),
    ("bench", ["--profile", "tiny", "--table", "diffusionmtl"], "--table diffusionmtl"),
    ("report", ["--out", "no_such_folder"], "tables folder no_such_folder not found"),
    ("report", ["--bogus"], "--bogus"),
    ("data", ["--profile", "huge"], "unknown profile 'huge'"),
    ("data", ["--profile", "paper"], "read from data.root"),
    ("features", ["--profile", "huge"], "unknown profile 'huge'"),
]


@pytest.mark.parametrize("command, args, needle", CASES, ids=[f"{c}-{' '.join(a)}" for c, a, _ in CASES])
def test_bad_input_exits_2_one_line_nothing_written(tmp_path, monkeypatch, capsys, command, args, needle):
    monkeypatch.chdir(tmp_path)
    code = run(_command(command), f"python -m repro.{command}", [*args, *_paths(command)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert os.listdir(tmp_path) == [], f"{command} {args} wrote {os.listdir(tmp_path)}"


def test_the_catalogue_is_large_and_distinct():
    """Issue 12 asks for at least 60 distinct bad inputs across the commands."""
    distinct = {(c, tuple(a)) for c, a, _ in CASES}
    assert len(distinct) == len(CASES) >= 60
    assert {c for c, _, _ in CASES} == {"table", "status", "figure", "bench", "report", "data", "features"}
