"""`python -m repro.table N --dry-run`: price a table before anything runs.

A paper-profile table costs days of a GPU node; a config error found on day two is the most
expensive bug the suite can have. The dry run composes and validates the spec, expands it
into its job DAG exactly as a run would (repro.plan), and prints per job: its kind, name,
key and dependencies, the resources it would ask for (the cluster config's `resources`),
an estimate of its compute, its disk, and what the store already holds for it.

Compute is counted, not guessed: each distinct network is built as the jobs build it, on
the meta device (no memory, no weights), and torch's FlopCounterMode counts one forward
(sampling) and one forward+backward (training) at batch 1 (repro.bench.measure.count_flops).
Training = that x batch x steps; sampling = forward x sampling steps x images. GPU-hours
follow at the cluster config's per-GPU peak for the job's precision times a stated
utilisation (`gpu:` in benchmarks/cluster/slurm.yaml). Not counted: elementwise work,
the optimiser, data loading, classifier-guidance gradients, Inception/AlexNet evaluation.

DiffusionMTL's jobs (dense_train, dense_predict) are counted the same way by
repro/bench/dense_flops.py: FLOPs per training image at the label setting's labelled tasks per
image, x batch x steps; one forward per test image. Its evaluation (metrics) is not counted.

Missing datasets, weights and reference batches are listed (repro.errors.collect_missing),
not fatal; any other bad setting is still a UserError. Nothing is written or submitted (a
latent-space network whose kl-f8 autoencoder is missing is counted with random autoencoder
weights of the same layout, in a temporary folder removed at once: FLOPs do not depend on
weights, and the missing file is listed).
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repro.config import compose, to_dict
from repro.errors import collect_missing
from repro.jobs.job import Job, topological

RESOURCE_KIND = {"generate": "sample", "classifier": "train", "released": "features"}   # kinds sized alike
FP32_BYTES = 4
CHECKPOINT_COPIES = 4     # checkpoint.pt: weights, EMA weights, AdamW's two moments (all fp32)
FINAL_COPIES = 2          # a finished train job keeps weights and EMA weights


@dataclass
class Estimate:
    flops: float = 0.0            # total FLOPs of the job (0: nothing counted)
    gpu_hours: float | None = None
    disk_bytes: float = 0.0
    note: str = ""


def _resources(cfg: DictConfig, table: str, profile: str, overrides: tuple[str, ...]) -> tuple[dict, dict, str]:
    """(resources by kind, gpu block, where they came from): the chosen cluster's if it sizes
    jobs, else the SLURM config's (what a cluster run of this profile would ask for)."""
    source = cfg
    if "resources" not in cfg.cluster:
        source = compose(table, profile, "slurm", overrides)
    c = source.cluster
    return (to_dict(c.get("resources") or {}), to_dict(c.get("gpu") or {}),
            f"benchmarks/cluster/{c.name}.yaml (by_profile.{profile})")


class FlopCounter:
    """FLOPs per image of each distinct network (by architecture), counted once on the meta device."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, float, int]] = {}

    def network(self, config: dict[str, Any]) -> tuple[float, float, int]:
        """(forward+backward FLOPs, forward FLOPs, parameters) of one image through the
        network of train-job config `config`."""
        from repro.bench.networks import _arch_key

        key = _arch_key(config)
        if key not in self._cache:
            with tempfile.TemporaryDirectory() as folder:
                self._cache[key] = self._count(_with_autoencoder(config, Path(folder)))
        return self._cache[key]

    def dense(self, config: dict[str, Any]):
        """DiffusionMTL's counts (repro.bench.dense_flops.DenseFlops) of dense_train config `config`."""
        from repro.bench.dense_flops import count_dense

        d = config["data"]
        key = json.dumps({"dense": [d["name"], d.get("format"), d["resolution"]], "task": config["task"],
                          "variant": config["model"]["variant"]}, sort_keys=True, default=str)
        if key not in self._cache:
            self._cache[key] = count_dense(config)
        return self._cache[key]

    @staticmethod
    def _count(config: dict[str, Any]) -> tuple[float, float, int]:
        import torch

        from repro.bench.measure import count_flops
        from repro.bench.networks import build, random_batch

        with torch.device("meta"):
            b = build(config)
        z0, x, extra = random_batch(config, b.task, 1, torch.Generator().manual_seed(0))
        meta = lambda v: {k: meta(u) for k, u in v.items()} if isinstance(v, dict) else v.to("meta")  # noqa: E731
        x, extra = meta(x), meta(extra)
        e = [encode(x[name]) for name, encode in b.encoders.items()]
        z, t = torch.zeros(z0.shape, device="meta"), torch.zeros(len(z0), device="meta")

        def call(train: bool) -> None:
            eps, *_ = b.model(z, t, e, **extra)
            if train:
                eps.float().sum().backward()
        params = sum(p.numel() for p in b.model.parameters())
        return count_flops(lambda: call(True)), count_flops(lambda: call(False)), params


def _with_autoencoder(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`config` unchanged, or, for a kl-f8 task whose autoencoder file is absent (listed as
    missing by the validation), pointing at random kl-f8 weights written into `folder`."""
    from repro.bench.networks import with_random_autoencoder

    task = config.get("task", {})
    if task.get("space") != "kl-f8" or (task.get("autoencoder") and Path(task["autoencoder"]).expanduser().exists()):
        return config
    return with_random_autoencoder(config, folder)


def _train_config(job: Job) -> dict[str, Any] | None:
    """The train-job config behind a train, released, generate or sample job (its model's)."""
    if job.kind in ("train", "released"):
        return job.config
    model = job.deps.get("model")
    return None if model is None else _train_config(model)


def _gpu_hours(flops: float, gpu: dict[str, Any], precision: str) -> float | None:
    peak = (gpu.get("peak_tflops") or {}).get(gpu.get("type"), {}).get(precision)
    if not peak or not flops:
        return None
    return flops / (peak * 1e12 * float(gpu.get("utilisation", 0.4))) / 3600


def estimate(job: Job, counter: FlopCounter, gpu: dict[str, Any]) -> Estimate:
    """Compute and disk of one job (see the module docstring for what is counted)."""
    if job.kind == "train":
        c = job.config
        train_flops, _, params = counter.network(c)
        steps, batch = int(c["train"]["steps"]), int(c["train"]["batch_size"])
        precision = "bf16" if c["train"].get("autocast", "none") == "bf16" else "fp32"
        snaps = steps // int(c["train"].get("snapshot_every") or steps + 1)
        flops = train_flops * batch * steps
        return Estimate(flops, _gpu_hours(flops, gpu, precision),
                        params * FP32_BYTES * (CHECKPOINT_COPIES + FINAL_COPIES + snaps),
                        f"{train_flops / 1e9:.1f} GFLOP/image fwd+bwd x {batch} x {steps} steps, {precision}; "
                        f"{params / 1e6:.1f}M params")
    if job.kind in ("generate", "sample"):
        c, model = job.config, _train_config(job)
        n = int(c.get("eval", {}).get("n_images", 0)) * max(1, len(c.get("eval", {}).get("mask_counts", []) or []))
        res = int(c["data"]["resolution"])
        disk = n * 3 * res * res     # uint8 images (repro.jobs.samples)
        if model is None:
            return Estimate(0.0, None, disk, "no network")
        _, fwd, _ = counter.network(model)
        steps = int(c["sample"]["steps"])
        precision = "bf16" if c["sample"].get("autocast", "none") == "bf16" else "fp32"
        flops = fwd * steps * n
        guided = " (+ classifier gradients, not counted)" if "classifier" in job.deps else ""
        return Estimate(flops, _gpu_hours(flops, gpu, precision), disk,
                        f"{fwd / 1e9:.1f} GFLOP/image fwd x {steps} steps x {n} images, {precision}{guided}")
    if job.kind in ("dense_train", "dense_predict"):
        return _dense_estimate(job, counter, gpu)
    if job.kind == "released":
        _, _, params = counter.network(job.config)
        return Estimate(0.0, None, params * FP32_BYTES, "import of a released checkpoint")
    return Estimate(0.0, None, 0.0, "not counted (feature extraction / metrics / classifier)")


DENSE_CHECKPOINT_COPIES = 3   # dense_train's checkpoint.pt: weights and Adam's two moments (no EMA)
DENSE_OUTPUT_BYTES = {"semseg": 1, "human_parts": 1, "sal": 4, "edge": 4, "depth": 4, "normals": 12}  # per pixel
DENSE_BASELINES = ("mtl_baseline", "single_task")   # no preliminary predictions to save


def _dense_estimate(job: Job, counter: FlopCounter, gpu: dict[str, Any]) -> Estimate:
    """DiffusionMTL's training (FLOPs per image at the setting's labels per image, x batch x
    steps) and test predictions (one forward per test image); repro/bench/dense_flops.py."""
    from repro.bench.dense_flops import image_size, mean_labels

    c = job.config if job.kind == "dense_train" else job.deps["model"].config
    f = counter.dense(c)
    precision = "bf16" if c["train"].get("autocast", "none") == "bf16" else "fp32"
    if job.kind == "dense_train":
        steps, batch = int(c["train"]["steps"]), int(c["train"]["batch_size"])
        labels = mean_labels(c["data"])
        per = f.train(labels)
        flops = per * batch * steps
        how = ("every task labelled: an upper bound, the mapping file is not on disk" if labels is None
               else f"{labels:.2f} labelled tasks per image")
        return Estimate(flops, _gpu_hours(flops, gpu, precision), f.params * FP32_BYTES * (DENSE_CHECKPOINT_COPIES + 1),
                        f"{per / 1e9:.1f} GFLOP/image fwd+bwd ({how}) x {batch} x {steps} steps, {precision}; "
                        f"{f.params / 1e6:.1f}M params; augmentation {c['train'].get('augment', 'none')}")
    n = int(job.config["eval"]["n_images"])
    h, w = image_size(c["data"])
    stages = 1 if c["model"]["variant"] in DENSE_BASELINES else 2
    from repro.data.registry import dense_tasks

    per_pixel = 3 + stages * sum(DENSE_OUTPUT_BYTES[t] for t in dense_tasks(c["data"]))
    flops = f.forward * n
    return Estimate(flops, _gpu_hours(flops, gpu, precision), float(n * h * w * per_pixel),
                    f"{f.forward / 1e9:.1f} GFLOP/image fwd (every task) x {n} test images, {precision}")


def store_state(job: Job, store: Path) -> str:
    """done / partial (a folder with a checkpoint, samples or status) / none; reads only."""
    from repro.jobs.store import JobStore

    d = JobStore(store).dir(job)
    if not d.path.exists():
        return "none"
    return "done" if d.done else "partial"


def _human(n: float, unit: str = "B") -> str:
    for prefix in ("", "K", "M", "G", "T", "P"):
        if abs(n) < 1000:
            return f"{n:.1f} {prefix}{unit}"
        n /= 1000
    return f"{n:.1f} E{unit}"


def dry_run(table: str, profile: str, cluster: str, overrides: tuple[str, ...], store: Path,
            validate: Callable[[DictConfig], None]) -> list[str]:
    """The dry run's report, as lines; writes nothing. `validate` is the table CLI's own check."""
    from repro.plan import efficiency_plan, plan

    cfg = compose(table, profile, cluster, overrides)
    with collect_missing() as absent:
        validate(cfg)
        rows = plan(cfg)
        points = efficiency_plan(cfg) if cfg.table.evaluation == "generation" else []
    jobs = topological([r.job for r in rows] + [p.job for p in points])
    return price_jobs(f"table {table}", jobs, cfg, table, profile, overrides, store, absent)


def dry_run_readings(profile: str, cluster: str, overrides: tuple[str, ...], store: Path,
                     validate: Callable[[DictConfig], None]) -> list[str]:
    """The readings study's dry run (`python -m repro.table readings --dry-run`): every job of every
    (reading, seed, table), each shared job once; writes nothing."""
    from repro.readings import plan_readings

    with collect_missing() as absent:
        study = plan_readings(profile, cluster, overrides, check=validate)
    jobs = topological([job for *_, job in study.planned])
    table = list(study.rows)[-1]   # the table whose config study.cfg is (resources depend on the profile only)
    return price_jobs("the readings study", jobs, study.cfg, table, profile, overrides, store,
                      list(dict.fromkeys(absent)))


def price_jobs(what: str, jobs: list[Job], cfg: DictConfig, table: str, profile: str, overrides: tuple[str, ...],
               store: Path, absent: list[str]) -> list[str]:
    """The dry-run report of `jobs` (topologically ordered): each job's resources, compute, disk
    and store state, the totals and the missing inputs."""
    resources, gpu, res_from = _resources(cfg, table, profile, overrides)
    counter = FlopCounter()
    util = float(gpu.get("utilisation", 0.4))
    lines = [f"dry run: {what}, profile {profile}, {len(jobs)} jobs; nothing written, nothing submitted",
             f"resources from {res_from}; GPU-hours at {gpu.get('type', '?')} peak "
             f"{json.dumps(gpu.get('peak_tflops', {}).get(gpu.get('type'), {}))} TFLOP/s x utilisation {util:g} "
             f"(stated assumption)"]
    total_flops = total_hours = total_disk = 0.0
    node_hours: dict[str, float] = {}
    for job in jobs:
        res = resources.get(RESOURCE_KIND.get(job.kind, job.kind), resources.get(job.kind, {}))
        gpus = int(res.get("nodes", 1)) * int(res.get("gpus_per_node", 0))
        est = estimate(job, counter, gpu)
        deps = ",".join(f"{role}={d.key[:8]}" for role, d in sorted(job.deps.items())) or "-"
        hours = f"{est.gpu_hours:.1f} GPU-h" + (f" ({est.gpu_hours / gpus:.1f} h wall on {gpus})" if gpus else "") \
            if est.gpu_hours is not None else "-"
        lines.append(f"{job.kind:10s} {job.name:40s} {job.key[:8]}  deps {deps}")
        lines.append(f"           resources: {gpus} GPU, {res.get('timeout_min', '?')} min limit, "
                     f"{res.get('mem_gb', '?')} GB/task | compute {est.flops / 1e18:.3g} EFLOP, {hours} | "
                     f"disk {_human(est.disk_bytes)} | store: {store_state(job, store)}")
        if est.note:
            lines.append(f"           ({est.note})")
        total_flops += est.flops
        total_hours += est.gpu_hours or 0.0
        total_disk += est.disk_bytes
    lines.append(f"total: {total_flops / 1e18:.3g} EFLOP, {total_hours:,.1f} GPU-hours "
                 f"({total_hours / 8 / 24:.1f} days on 8 GPUs), disk {_human(total_disk)}")
    if absent:
        lines.append(f"missing inputs ({len(absent)}; needed before a real run):")
        lines += [f"  - {m}" for m in absent]
    else:
        lines.append("missing inputs: none")
    return lines


def gpu_block(cfg: DictConfig) -> dict[str, Any]:
    """The cluster's GPU throughput block (for tests and reports)."""
    return OmegaConf.to_container(cfg.cluster.get("gpu") or OmegaConf.create({}), resolve=True)
