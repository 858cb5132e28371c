"""Checks of a composed table config, run before any job starts.

Everything here raises `repro.errors.UserError` with one line (the CLIs turn it into exit
status 2), so that a bad value stops `python -m repro.table` before a job folder is made.
The values a job reads are checked against one schema (repro/schema.py); this module adds
what the schema cannot see: relations between a spec's table and its settings, the named
readings, the data and weight files themselves. `validate` is shared by every command that
runs a spec (repro.table, repro.figure, the readings study, the dry run).
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from repro.errors import UserError
from repro.report.paper import column_names

MAX_PATCHES = 100   # beyond this a 64x64 image with 16x16 patches is masked many times over


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked before a job starts."""
    from repro.data.registry import check_data
    from repro.dispatch import check_cluster
    from repro.schema import check
    from repro.tasks import check_task

    if cfg.table.evaluation == "dense":   # DiffusionMTL's specs: their own tasks and data
        return validate_dense(cfg)
    check(cfg)   # types, ranges, names and relations of every value a job reads (repro/schema.py)
    check_cluster(cfg.cluster)
    if "augment" in cfg.train:   # an optional key of the schema that only dense_train reads
        raise UserError(f"train.augment is DiffusionMTL's training augmentation: the {cfg.table.key} table's "
                        f"training jobs do not read it; remove it")
    if "mask_counts" in cfg.eval:
        counts = list(cfg.eval.mask_counts)
        bad = [m for m in counts if not isinstance(m, int) or not 0 <= m <= MAX_PATCHES]
        if bad:
            raise UserError(f"eval.mask_counts {counts}: each must be an integer in 0..{MAX_PATCHES}, got {bad}")
        columns = column_names(cfg.table)
        if len(counts) != len(columns):
            raise UserError(f"eval.mask_counts has {len(counts)} entries but the table has "
                            f"{len(columns)} columns {columns}")
        lo, hi = cfg.task.train_patches
        if not 0 <= lo <= hi <= MAX_PATCHES:
            raise UserError(f"task.train_patches [{lo}, {hi}] must satisfy 0 <= lo <= hi <= {MAX_PATCHES}")
    for key in ("n_images", "batch_size"):
        if key in cfg.eval and cfg.eval[key] < 1:
            raise UserError(f"eval.{key} must be at least 1, got {cfg.eval[key]}")
    check_readings(cfg)
    check_data(cfg.data)
    open_some_images(cfg.data)
    check_task(cfg)
    if cfg.features.kind == "pretrained" and cfg.table.evaluation == "lpips_restoration":
        from repro.weights import check_weights

        check_weights("lpips_alexnet", cfg.weights.lpips_alexnet)
    from repro.weights import WEIGHTS, check_state_dict

    for name, path in (cfg.get("weights") or {}).items():   # every configured file that is there:
        if name in WEIGHTS and path and Path(str(path)).expanduser().is_file():   # the right network?
            check_state_dict(name, path)


IMAGES_OPENED = 8   # per split: enough to catch a folder of unreadable files, cheap on a cluster filesystem


def open_some_images(data: DictConfig, k: int = IMAGES_OPENED) -> None:
    """A user-held class-folder dataset (ImageNet): decode `k` files drawn at random (seeded) from
    each split, so that a folder of truncated or non-image files stops the run before training,
    with the file's path (repro.data.image_files.read_image), not hours into it."""
    import random

    from repro.data.image_files import read_image
    from repro.data.imagenet import list_class_folders

    if data.get("name") != "imagenet":
        return
    for key in ("root", "test_root"):
        # a missing folder is check_data's to report (or to list, in a dry run)
        if data.get(key) and Path(str(data[key])).expanduser().is_dir():
            _, files = list_class_folders(Path(str(data[key])).expanduser(), f"data.{key}", f"set data.{key}")
            for path, _ in random.Random(0).sample(files, min(k, len(files))):
                read_image(path)


def check_readings(cfg: DictConfig) -> None:
    """The named readings (README, "Decisions the paper leaves open") before any job starts."""
    from repro.data.pixels import UINT8_ROUNDINGS
    from repro.diffusion.network_input import NETWORK_INPUTS
    from repro.diffusion.sampling import PRIORS

    choices = {"diffusion.network_input": NETWORK_INPUTS, "diffusion.prior": PRIORS,
               "eval.uint8_rounding": UINT8_ROUNDINGS}
    for key, allowed in choices.items():
        block, name = key.split(".")
        value = cfg[block].get(name) if block in cfg else None
        if value is not None and value not in allowed:
            raise UserError(f"{key}={value!r}: choose one of {', '.join(allowed)}")
    vlb = [float(cfg.train.get("vlb_weight") or 0.0),
           *(float(m.get("train", {}).get("vlb_weight") or 0.0) for m in cfg.get("models", {}).values())]
    if any(w < 0 for w in vlb):
        raise UserError(f"train.vlb_weight must be >= 0, got {min(vlb)}")
    if any(vlb) and not cfg.unet.get("learn_sigma", False):
        raise UserError("train.vlb_weight > 0 trains a learned variance: set unet.learn_sigma=true "
                        "(the hybrid loss of ADM's learn_sigma models) or leave vlb_weight at 0")


def validate_dense(cfg: DictConfig) -> None:
    """DiffusionMTL's spec (table.evaluation == "dense"): its cluster, the data and mapping
    files of every setting a row may train on, its task's own checks, the evaluation counts."""
    from repro.data.registry import check_data
    from repro.dispatch import check_cluster
    from repro.plan import DENSE_SETTINGS, dense_settings
    from repro.schema import check
    from repro.tasks.dense import DENSE_TASKS, make_dense_task

    check(cfg)   # the values the dense jobs share with the others' schema (train.*, eval.*, train.augment)
    check_cluster(cfg.cluster)
    dense_settings(cfg)
    for setting in DENSE_SETTINGS:   # the data and mapping files of every setting a row may train on
        check_data({**cfg.data, "setting": setting})
    make_dense_task(cfg)
    DENSE_TASKS[cfg.task.name].check_config(cfg)
    for key in ("n_images", "batch_size"):
        if cfg.eval[key] < 1:
            raise UserError(f"eval.{key} must be at least 1, got {cfg.eval[key]}")
