"""python -m repro.bench [--profile smoke] [--iters 20] [--json]: per-iteration cost of training and sampling.

A benchmark, not a test. It measures, at a profile's model size and on random data:

  * one training iteration (Algorithm 2: forward, backward, AdamW step) and one sampling
    network call (Algorithm 1) of each distinct network the chosen table trains (`--table`,
    default 2: ADM, ADM conditional, MT-Diffusion-U, -X (masked image), -M, -E (image-label)),
    named by variant, with each one's ratio to the table's single-task baseline (ADM; the
    single-task model of Table 4 / night2day). The ratio is the paper's overhead claim
    (Appendix E.5: two-modality MT-Diffusion costs about 10% more training time per iteration
    than single-task diffusion);
  * the FLOPs of a training iteration (torch's FlopCounterMode) and the achieved FLOP/s
    against the same run's matmul rate;
  * each fast path (repro.nn.fast_paths, repro.nn.precision) on ADM: step time, sampling
    evaluations per second and the training step's peak memory, against the default path
    (every switch off: ADM's own computation). The variants above run with the profile's
    switches, as the jobs do, and record which;
  * the evaluation feature network's images per second, and the process's peak RSS;
  * with --paper-configs: every distinct paper-profile network at full size (one training
    step and one sampling call at batch 1): wall time and peak memory per configuration.

Timings are medians over `--iters` repetitions after a warm-up. On a shared machine
compare ratios from one run, not numbers across runs. The default output is text;
--json prints one JSON object instead.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import click
import torch

from repro.bench.measure import (
    PeakMemory, SavedActivations, count_flops, interleaved_medians, matmul_rate, median_seconds, peak_rss_bytes,
)
from repro.bench.networks import build, job_config, sampling_call, train_step
from repro.bench.paper_configs import bench_paper_configs
from repro.cli import profile_option
from repro.config import compose
from repro.errors import UserError

BASELINE_VARIANTS = ("adm", "single", "adm_cond")   # single-task variants, the first one present is the baseline
# Fast-path settings timed on ADM: name -> (sdpa, channels_last, checkpoint, precision).
FAST_PATHS = {
    "default": (False, False, False, "fp32"),
    "sdpa": (True, False, False, "fp32"),
    "channels_last": (False, True, False, "fp32"),
    "checkpoint": (False, False, True, "fp32"),
    "bf16": (False, False, False, "bf16"),
    "sdpa+channels_last+bf16": (True, True, False, "bf16"),
}
MB = 2**20


def bench_variants(configs: dict[str, dict[str, Any]], iters: int, device: str,
                   sample_batch: int) -> dict[str, dict[str, float]]:
    """Training step and sampling call of every variant as its jobs run it (the profile's speed
    switches applied), timed round-robin; FLOPs per step."""
    from repro.nn.fast_paths import SWITCHES

    steps, calls, out = {}, {}, {}
    for name, config in configs.items():
        built = build(config)
        steps[name] = train_step(config, built, int(config["train"]["batch_size"]), device=device)
        calls[name] = sampling_call(config, built, sample_batch, device=device)
        out[name] = {"parameters": sum(p.numel() for p in built.model.parameters()),
                     "train_flops": count_flops(steps[name]),
                     # the speed switches the jobs run this network with (the profile's `unet:`)
                     "switches": {switch: bool(config["unet"].get(switch)) for switch in SWITCHES}}
    train_s = interleaved_medians(steps, iters, device=device)
    sample_s = interleaved_medians(calls, iters, device=device)
    for name, v in out.items():
        v.update(train_s=train_s[name], train_flops_per_s=v["train_flops"] / train_s[name],
                 sample_step_s=sample_s[name], sample_evals_per_s=sample_batch / sample_s[name])
    return out


def bench_fast_paths(config: dict[str, Any], iters: int, device: str, sample_batch: int) -> dict[str, dict[str, Any]]:
    """Every FAST_PATHS setting on one network (same weights): step time, sampling rate,
    activations kept for backward, and (CUDA) the training step's peak memory; timed round-robin.

    Every setting starts from the network with all of the spec's speed switches off (ADM's own
    computation: einsum attention, NCHW, no checkpointing), so `default` is that computation and
    not the profile's choice (build() applies `unet.use_sdpa` / `channels_last` as the jobs do)."""
    from repro.nn.fast_paths import SWITCHES, set_fast_paths, to_channels_last

    plain = {**config, "unet": {**config["unet"], **{switch: False for switch in SWITCHES}}}
    steps, calls, out = {}, {}, {}
    for name, (sdpa, channels_last, checkpoint, precision) in FAST_PATHS.items():
        built = build(plain)
        set_fast_paths(built.model, sdpa=sdpa, checkpoint=checkpoint)
        if channels_last:
            to_channels_last(built.model)
        opts = dict(device=device, precision=precision, channels_last=channels_last)
        steps[name] = train_step(config, built, int(config["train"]["batch_size"]), **opts)
        calls[name] = sampling_call(config, built, sample_batch, **opts)
        steps[name]()                       # optimiser state allocated before memory is measured
        with PeakMemory(device) as mem, SavedActivations(built.model) as saved:
            steps[name]()
        # On a CPU the RSS hides the allocator's reuse of freed memory: only CUDA's peak is reported.
        out[name] = {"train_saved_activations_mb": saved.bytes / MB,
                     "train_peak_mb": mem.peak_bytes / MB if device == "cuda" else None}
    train_s = interleaved_medians(steps, iters, device=device)
    sample_s = interleaved_medians(calls, iters, device=device)
    base = out["default"]
    for name, v in out.items():
        v.update(train_s=train_s[name], sample_evals_per_s=sample_batch / sample_s[name],
                 train_speedup=train_s["default"] / train_s[name], sample_speedup=sample_s["default"] / sample_s[name],
                 saved_activations_ratio=v["train_saved_activations_mb"] / base["train_saved_activations_mb"],
                 train_peak_ratio=v["train_peak_mb"] / base["train_peak_mb"] if base["train_peak_mb"] else None)
    return out


def eval_images_per_s(cfg, iters: int, device: str) -> dict[str, Any]:
    """Throughput of the evaluation's feature network (FID/IS/LPIPS features) on random images."""
    batch, res = int(cfg.eval.batch_size), int(cfg.data.resolution)
    if cfg.features.kind == "embedded":
        from repro.data.embedded import NUM_CLASSES
        from repro.metrics.feature_net import FeatureNet, FeatureNetConfig

        net, name = FeatureNet(FeatureNetConfig(num_classes=NUM_CLASSES)), "FeatureNet (embedded)"
        fn = net.embed
    else:   # the architecture of the pretrained Inception-v3 (throughput does not depend on the weights)
        from torchvision.models import inception_v3

        net, name = inception_v3(weights=None, aux_logits=False, init_weights=False), "Inception-v3 (299 px)"
        res = 299
        fn = net
    net = net.to(device).eval()
    x = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    with torch.no_grad():
        seconds = median_seconds(lambda: fn(x), iters, device=device)
    return {"network": name, "batch": batch, "images_per_s": batch / seconds}


def table_models(cfg, table: str) -> dict[str, str]:
    """Variant name -> the first model of the table's `models` with that network (models that
    continue or finetune another share its network and are timed once). UserError for a table
    whose networks are not diffusion models trained by `train` jobs."""
    from repro.bench.networks import _arch_key
    from repro.config import available_tables

    if cfg.table.evaluation == "dense" or not cfg.get("models"):
        supported = [t for t in available_tables() if t != table and t != "diffusionmtl"]
        raise UserError(f"--table {table}: python -m repro.bench times the diffusion models a table trains and "
                        f"{table} has none; choose one of {', '.join(supported)}")
    models, seen = {}, set()
    for name in cfg.models:
        config = job_config(cfg, name)
        key = _arch_key(config)
        if key not in seen:
            seen.add(key)
            models[str(config["model"]["variant"])] = name
    return models


def run(profile: str, iters: int, device: str, table: str, fast_paths: bool) -> dict[str, Any]:
    cfg = compose(table, profile)
    sample_batch = int(cfg.sample.batch_size)
    configs = {v: job_config(cfg, m) for v, m in table_models(cfg, table).items()}
    base = next((v for v in BASELINE_VARIANTS if v in configs), next(iter(configs)))
    variants = bench_variants(configs, iters, device, sample_batch)
    rate = matmul_rate(device)
    for v in variants.values():
        v["train_vs_baseline"] = v["train_s"] / variants[base]["train_s"]
        v["sample_vs_baseline"] = v["sample_step_s"] / variants[base]["sample_step_s"]
        v["train_flops_vs_matmul"] = v["train_flops_per_s"] / rate
    out: dict[str, Any] = {
        "profile": profile, "table": table, "baseline": base, "device": device, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "iters": iters,
        "train_batch": int(cfg.train.batch_size), "sample_batch": sample_batch,
        "resolution": int(cfg.data.resolution),
        "matmul_flops_per_s": {"fp32": rate, "bf16": matmul_rate(device, torch.bfloat16)},
        "variants": variants,
    }
    if fast_paths:
        out["fast_paths"] = bench_fast_paths(configs[base], iters, device, sample_batch)
    out["eval"] = eval_images_per_s(cfg, iters, device)
    slowest = max(variants, key=lambda v: variants[v]["train_s"])
    out["estimated_train_minutes"] = {"variant": slowest,
                                      "minutes": variants[slowest]["train_s"] * int(cfg.train.steps) / 60}
    out["peak_rss_mb"] = peak_rss_bytes() / MB
    return out


def print_text(res: dict[str, Any]) -> None:
    import pandas as pd

    frame = pd.DataFrame(res["variants"]).T[["parameters", "train_s", "sample_step_s", "train_vs_baseline",
                                             "sample_vs_baseline", "train_flops_vs_matmul"]]
    print(f"profile {res['profile']} (table {res['table']}): batch {res['train_batch']} (train), "
          f"{res['sample_batch']} (sample), {res['resolution']}px, {res['threads']} torch threads on "
          f"{res['device']}, median of {res['iters']}")
    print(frame.to_string(float_format=lambda v: f"{v:.4g}"))
    on = [k for k, v in res["variants"][res["baseline"]]["switches"].items() if v]
    print(f"(as the jobs run them: speed switches {', '.join(on) if on else 'none'} on)")
    if "fast_paths" in res:
        print(f"\nfast paths on {res['baseline']} (default: every switch off, ADM's own computation):")
        print(pd.DataFrame(res["fast_paths"]).T.to_string(float_format=lambda v: f"{v:.4g}"))
    ev = res["eval"]
    print(f"\nevaluation features: {ev['images_per_s']:.4g} images/s ({ev['network']}, batch {ev['batch']}); "
          f"peak RSS {res['peak_rss_mb']:.0f} MB")
    est = res["estimated_train_minutes"]
    print(f"estimated training time per model: {est['minutes']:.1f} min ({est['variant']} variant, the slowest; "
          f"ratios against {res['baseline']})")


@click.command()
@profile_option
@click.option("--table", default="2", show_default=True,
              help="spec whose trained networks are timed (Table 2 has every MT-Diffusion variant)")
@click.option("--iters", type=click.IntRange(min=1), default=20, show_default=True,
              help="timed repetitions (median reported)")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch threads (0: torch's default)")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the text tables")
@click.option("--fast-paths/--no-fast-paths", default=True, show_default=True, help="time each fast path on ADM")
@click.option("--paper-configs", is_flag=True, help="only: every paper-profile network at full size, batch 1")
def main(profile: str, table: str, iters: int, threads: int, device: str, as_json: bool, fast_paths: bool,
         paper_configs: bool) -> None:
    if threads:
        torch.set_num_threads(threads)
    if iters < 1:
        raise UserError(f"--iters must be at least 1, got {iters}")
    if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
        raise UserError(f"--device {device!r}: choose cpu, or cuda on a machine with a GPU")
    if paper_configs:
        rows = bench_paper_configs(device)
        if as_json:
            json.dump({"device": device, "threads": torch.get_num_threads(), "paper_configs": rows}, sys.stdout, indent=1)
            print()
        else:
            import pandas as pd
            print(pd.DataFrame(rows).drop(columns=["used_by", "loss"], errors="ignore").to_string(
                float_format=lambda v: f"{v:.4g}"))
        return
    res = run(profile, iters, device, table, fast_paths)
    if as_json:
        json.dump(res, sys.stdout, indent=1)
        print()
    else:
        print_text(res)


def cli(argv: list[str] | None = None) -> int:
    from repro.cli import run as run_command

    return run_command(main, "python -m repro.bench", argv)


if __name__ == "__main__":
    sys.exit(cli())
