"""Job body: produce a row's samples with its task's sampler (its model, if it has one).

The task returns arrays (`repro.tasks.base.Task.sample`); this job writes them in the one
samples format (`repro.jobs.samples`), part by part: a requeued Table 1 job keeps the mask
counts it had written, and within a mask count the batches it had finished
(`checkpoint_batches/`, repro.jobs.batches), so a killed job resumes at the next batch with
the same numbers as an uninterrupted run.
"""
from __future__ import annotations

from typing import Any

from repro.data.registry import dataset
from repro.diffusion import MTProcess
from repro.jobs import samples
from repro.jobs.batches import BatchCheckpoints
from repro.jobs.store import JobDir
from repro.jobs.trained import load_denoiser
from repro.tasks import make_task


def sampling_process(train_cfg: dict, n_modalities: int, steps: int | str) -> MTProcess:
    """The training process respaced to `steps` (weights re-derived on the new grid)."""
    from repro.jobs.trained import make_process

    return make_process(train_cfg["diffusion"], n_modalities, respacing=steps)


def sampling_autocast(cfg: dict, model) -> Any:
    """bf16 autocast of the denoising passes where sample.autocast says so (none: fp32), on the model's device."""
    from repro.nn.precision import autocast, precision_of

    device = next(model.parameters()).device if model is not None else "cpu"
    return autocast(device, precision_of(cfg["sample"].get("autocast"), "sample.autocast"))


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    model = process = None
    if "model" in deps:
        # the model behind the network input it was trained with (repro.jobs.trained.read_network);
        # `snapshot`: the EMA weights after that many training steps (Table 1's learning curves)
        task, model, _, train_cfg = load_denoiser(deps["model"], step=cfg.get("snapshot"))
        process = sampling_process(train_cfg, task.n_modalities(train_cfg["model"]["variant"]), cfg["sample"]["steps"])
        print(f"sampling with {process.num_steps} respaced steps of T={train_cfg['diffusion']['T']}")
    else:
        task = make_task(cfg)
    kind = task.samples_kind
    held = samples.read(out).parts() if kind == "restorations" and samples.exists(out) else []
    # each finished batch is saved (with the sampler's generator state) and read back after a kill
    batches = BatchCheckpoints(out.path, sleep_s=cfg["sample"].get("sleep_s", 0.0))
    for part in task.sample_parts(cfg):
        if part in held:   # finished before a preemption: keep it
            continue
        with sampling_autocast(cfg, model):
            arrays = task.sample(cfg, model, process, part, batches=batches.tensor)
        samples.write(out, kind, arrays, part=part if kind == "restorations" else None)
        saved = samples.read(out)
        if kind == "translations":
            t = cfg["task"]
            samples.write_grids(out, saved, titles=(t["source"], f"{t['target']}: {cfg['row']['name']}",
                                                    f"{t['target']}: ground truth"))
        else:
            samples.write_grids(out, saved, part=part, title=f"{cfg['row']['name']}: jointly drawn images")
    result: dict[str, Any] = {"samples": samples.FILE, "kind": kind, "n_images": len(samples.read(out))}
    if kind == "translations":
        palette = dataset(cfg["data"]).palette if cfg["task"]["target"] == "labels" else None
        result.update(method=cfg["row"]["method"], num_classes=None if palette is None else len(palette))
    return result
