"""python -m repro.bench: the JSON report's structure on a tiny run, and its measurements
against hand-computed values (no timing assertions: timings depend on the machine)."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from repro.bench import __main__ as bench
from repro.bench.__main__ import FAST_PATHS, cli, main
from repro.bench.networks import job_config
from repro.config import compose
from repro.nn.fast_paths import SWITCHES
from repro.bench.measure import SavedActivations, count_flops, median_seconds


@pytest.fixture(scope="module")
def tiny_report() -> dict:
    result = CliRunner().invoke(main, ["--profile", "tiny", "--iters", "1", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_json_report_has_every_measurement(tiny_report):
    r = tiny_report
    assert r["profile"] == "tiny" and r["device"] == "cpu"
    # Table 2's distinct networks, one per variant (the dropout / single-task stages share M's and E's)
    assert set(r["variants"]) == {"adm", "adm_cond", "U", "X", "M", "E"} and r["baseline"] == "adm"
    for name, v in r["variants"].items():
        for key in ("parameters", "train_s", "train_flops", "train_flops_per_s", "train_flops_vs_matmul",
                    "sample_step_s", "sample_evals_per_s", "train_vs_baseline", "sample_vs_baseline"):
            assert v[key] > 0, (name, key)
        assert v["train_flops_per_s"] == pytest.approx(v["train_flops"] / v["train_s"])
        assert v["sample_evals_per_s"] == pytest.approx(r["sample_batch"] / v["sample_step_s"])
    assert r["variants"]["adm"]["train_vs_baseline"] == 1.0
    # Same backbone: every variant has at least ADM's parameters and FLOPs (heads, extra inputs add).
    adm = r["variants"]["adm"]
    for v in r["variants"].values():
        assert v["parameters"] >= adm["parameters"] and v["train_flops"] >= adm["train_flops"]
    assert r["variants"]["E"]["parameters"] > r["variants"]["M"]["parameters"]   # the classifier head
    profile_switches = {k: bool(compose("2", "tiny").unet.get(k)) for k in SWITCHES}
    assert all(v["switches"] == profile_switches for v in r["variants"].values())   # as the jobs run them
    assert set(r["fast_paths"]) == set(FAST_PATHS)
    for p in r["fast_paths"].values():
        for key in ("train_s", "sample_evals_per_s", "train_peak_mb", "train_saved_activations_mb",
                    "train_speedup", "sample_speedup", "saved_activations_ratio"):
            assert key in p
    # Checkpointing keeps fewer activations for backward.
    assert r["fast_paths"]["checkpoint"]["saved_activations_ratio"] < 0.7
    assert r["matmul_flops_per_s"]["fp32"] > 0 and r["eval"]["images_per_s"] > 0 and r["peak_rss_mb"] > 0


def test_text_output_stays_the_default():
    result = CliRunner().invoke(main, ["--profile", "tiny", "--iters", "1", "--threads", "1", "--no-fast-paths"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("profile tiny (table 2)")
    assert "train_vs_baseline" in result.output and "fast paths" not in result.output


def test_bad_arguments_exit_2(capsys):
    assert cli(["--iters", "0"]) == 2
    assert cli(["--device", "tpu"]) == 2
    assert cli(["--profile", "huge"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3


def test_flop_count_of_a_linear_layer_by_hand():
    layer = torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(4, 16, requires_grad=True)
    # forward 2*4*16*8; backward: grad wrt input and wrt weight, each the same matmul size.
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 4 * 16 * 8


def test_saved_activations_counts_what_backward_keeps():
    w = torch.nn.Parameter(torch.randn(32, 32))
    model = torch.nn.Module()
    model.w = w
    x = torch.randn(64, 32)
    with SavedActivations(model) as saved:
        y = torch.tanh(x @ w)          # mm saves x (and w, a parameter: excluded); tanh saves its output
    assert saved.bytes == 2 * 64 * 32 * 4
    y.sum().backward()


def test_median_seconds_is_the_median(monkeypatch):
    durations = iter([0.0, 0.0, 3.0, 1.0, 2.0])     # two warm-up calls, then 3, 1, 2 "seconds"
    clock = {"t": 0.0}

    def fake() -> None:
        clock["t"] += next(durations)
    import repro.bench.measure as m
    monkeypatch.setattr(m.time, "perf_counter", lambda: clock["t"])
    assert median_seconds(fake, iters=3, warmup=2) == 2.0


def test_table_1_times_the_networks_table_1_trains():
    """Table 1 trains ADM and MT-Diffusion-X only (it used to fail on Table 2's `mt_u`)."""
    result = CliRunner().invoke(main, ["--profile", "tiny", "--table", "1", "--iters", "1", "--threads", "1",
                                       "--json", "--no-fast-paths"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert set(r["variants"]) == {"adm", "X"} and r["baseline"] == "adm" and r["table"] == "1"
    assert r["variants"]["X"]["parameters"] > r["variants"]["adm"]["parameters"]   # the head, extra inputs


def test_a_table_without_diffusion_models_is_refused_in_one_line(capsys):
    assert cli(["--profile", "tiny", "--table", "diffusionmtl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --table diffusionmtl") and "choose one of 1, 2" in err[0]


def test_fast_paths_start_from_every_switch_off_whatever_the_profile_sets(monkeypatch):
    """The `default` fast path is ADM's own computation even where the profile turns switches on
    (smoke and paper set use_sdpa and channels_last): each setting builds the plain network."""
    config = job_config(compose("2", "tiny"), "adm")
    config["unet"] = {**config["unet"], "use_sdpa": True, "channels_last": True}   # a profile with switches on
    built_with = []
    real_build = bench.build

    def recording_build(cfg):
        built_with.append({k: cfg["unet"].get(k) for k in SWITCHES})
        return real_build(cfg)
    monkeypatch.setattr(bench, "build", recording_build)
    out = bench.bench_fast_paths(config, iters=1, device="cpu", sample_batch=2)
    assert set(out) == set(FAST_PATHS) and len(built_with) == len(FAST_PATHS)
    assert all(switches == {k: False for k in SWITCHES} for switches in built_with)
