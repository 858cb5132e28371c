"""Job body: score a row's saved samples with the table's evaluation.

Evaluators read only the sample job's files (and the feature network), never the
diffusion model: re-evaluating gives identical numbers without sampling again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from repro.data.pixels import to_model_space
from repro.errors import UserError
from repro.jobs.store import JobDir


def lpips_model(cfg: dict, deps: dict[str, JobDir]):
    """The profile's LPIPS network and a one-line name for table captions."""
    from repro.metrics import load_feature_net, lpips_alexnet, lpips_from_feature_net

    kind = cfg["features"]["kind"]
    if kind == "embedded":
        net = load_feature_net(deps["features"] / "feature_net.pt")
        return lpips_from_feature_net(net), ("LPIPS (lpips package, lpips=False) on the embedded feature network "
                                             "trained here, not AlexNet")
    if kind == "pretrained":
        return lpips_alexnet(Path(cfg["weights"]["lpips_alexnet"]).expanduser()), "LPIPS v0.1 (AlexNet)"
    raise UserError(f"unknown features.kind {kind!r}: choose embedded or pretrained")


def lpips_restoration(cfg: dict, deps: dict[str, JobDir]) -> dict[str, Any]:
    """Table 1: mean LPIPS(restored, original) per mask count (and its standard error)."""
    from repro.metrics import lpips_distance

    model, extractor = lpips_model(cfg, deps)
    files = deps["samples"].result()["files"]
    values, sems, n = {}, {}, 0
    for m, column in zip(cfg["eval"]["mask_counts"], cfg["table"]["columns"]):
        arr = np.load(deps["samples"] / files[str(m)])
        with torch.no_grad():
            d = lpips_distance(model, to_model_space(arr["restored"]), to_model_space(arr["original"]),
                               batch_size=cfg["eval"]["batch_size"])
        n = len(d)
        values[column] = float(d.mean())
        sems[column] = float(d.std() / np.sqrt(n)) if n > 1 else float("nan")
        print(f"{cfg['row']['name']} {column}: LPIPS {values[column]:.4f} +- {sems[column]:.4f} (n={n})")
    return {"values": values, "sem": sems, "n_images": n, "feature_extractor": extractor}


EVALUATORS: dict[str, Callable[[dict, dict[str, JobDir]], dict[str, Any]]] = {
    "lpips_restoration": lpips_restoration,
}


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    name = cfg["table"]["evaluation"]
    if name not in EVALUATORS:
        raise UserError(f"unknown evaluation {name!r}: choose one of {', '.join(EVALUATORS)}")
    return EVALUATORS[name](cfg, deps)
