"""Job body: score a row's saved samples with the table's evaluation.

Evaluators read only the sample job's files (and the feature network), never the
diffusion model: re-evaluating gives identical numbers without sampling again.

The network passes (LPIPS distances, feature extraction, embeddings) run batch by batch
through the job's `BatchCheckpoints` (repro.jobs.batches): a killed evaluation resumes at the
next batch. Each saved batch is exactly one batch of `eval.batch_size` images, the slice the
uninterrupted pass computes in one call, so the resumed numbers are bit-identical to it. What
follows the passes (means, the bootstrap replicates of the generation metrics) is one step,
computed again after a kill.

Why one module of ~330 lines: it is the one dispatch from a table's `evaluation` name to its
evaluator, each evaluator with the per-image cells its intervals need and the `reads()` that
keys its job; one evaluator per table kind, each short, kept beside the declaration of what
it reads so the two cannot disagree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from repro.data.pixels import to_model_space
from repro.errors import UserError
from repro.io import atomic_save_npz
from repro.jobs import samples as samples_format
from repro.jobs.batches import BatchCheckpoints
from repro.data.registry import data_reads
from repro.jobs.store import JobDir
from repro.report.cells import CellData, arrays_of_cells, cells_from_arrays, column_intervals
from repro.report.uncertainty import CONFIDENCE

CELLS_FILE = "cells.npz"      # per-image scores / bootstrap replicates behind each cell (repro.report.cells)
GENERATION_RESAMPLES = 200    # bootstrap replicates of the generation metrics (each: a FID + sFID + P/R pass)


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


REFERENCE_METHODS = ("real", "degrade")   # calibration rows (spec `reference_rows`), scored without a model


def is_reference(row: dict) -> bool:
    """A calibration row: real test images (`method: real`) or degraded ones (`method: degrade`)."""
    return row.get("method") in REFERENCE_METHODS


def reference_images(cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(originals, scored images) of a reference row: the first `eval.n_images` test images, and
    the same images degraded by `row.kind` at `row.strength` (repro.data.degradations; one fixed
    generator seed for every row, so that strengths are nested) or unchanged (`method: real`)."""
    from repro.data.degradations import degrade
    from repro.data.registry import load_images

    images = load_images(cfg["data"], "test")
    x = images.images(np.arange(min(int(cfg["eval"]["n_images"]), len(images))))
    row = cfg["row"]
    if row["method"] == "real":
        return x, x
    return x, degrade(x, row["kind"], float(row["strength"]), torch.Generator().manual_seed(0))


def batched_lpips(model, a: torch.Tensor, b: torch.Tensor, batch_size: int, batches: BatchCheckpoints,
                  tag: str) -> torch.Tensor:
    """Per-pair LPIPS distances [N] of a and b, one saved batch of `batch_size` pairs at a time."""
    from repro.metrics import lpips_distance

    with torch.no_grad():
        parts = [batches.tensor(tag, i, lambda lo=lo: lpips_distance(model, a[lo:lo + batch_size],
                                                                     b[lo:lo + batch_size], batch_size=batch_size))
                 for i, lo in enumerate(range(0, len(a), batch_size))]
    return torch.cat(parts) if parts else torch.zeros(0)


def batched_features(images: np.ndarray, extractor, batch_size: int,
                     batches: BatchCheckpoints) -> dict[str, torch.Tensor]:
    """`repro.metrics.fidelity.extract_features` of uint8 images, one saved batch at a time."""
    from repro.metrics.fidelity import extract_features

    parts = [batches("features", i, lambda lo=lo: {k: v.numpy() for k, v in extract_features(
        images[lo:lo + batch_size], extractor, batch_size).items()})
        for i, lo in enumerate(range(0, len(images), batch_size))]
    return {k: torch.cat([torch.from_numpy(p[k]) for p in parts]) for k in (parts[0] if parts else {})}


def lpips_reference(cfg: dict, deps: dict[str, JobDir], batches: BatchCheckpoints) -> dict[str, Any]:
    """Table 1's calibration rows: LPIPS(degraded test image, original), the whole image degraded
    (no mask), so the same per-image scores fill every mask-count column."""
    model, extractor = lpips_model(cfg, deps)
    original, degraded = reference_images(cfg)
    d = batched_lpips(model, degraded, original, cfg["eval"]["batch_size"], batches, "lpips")
    items = d.detach().cpu().numpy().astype(np.float64)
    columns = cfg["table"]["columns"]
    print(f"{cfg['row']['name']}: LPIPS {float(d.mean()):.4f} (n={len(d)}, every column)")
    return {"values": {c: float(d.mean()) for c in columns}, "n_images": int(len(d)), "feature_extractor": extractor,
            "cells": {c: CellData(float(d.mean()), items=items) for c in columns}}


def lpips_restoration(cfg: dict, deps: dict[str, JobDir], batches: BatchCheckpoints = BatchCheckpoints(None)
                      ) -> dict[str, Any]:
    """Table 1: mean LPIPS(restored, original) per mask count (and its standard error)."""
    if is_reference(cfg["row"]):
        return lpips_reference(cfg, deps, batches)
    model, extractor = lpips_model(cfg, deps)
    saved = samples_format.read(deps["samples"])
    values, sems, cells, n = {}, {}, {}, 0
    for m, column in zip(cfg["eval"]["mask_counts"], cfg["table"]["columns"]):
        arr = saved.restorations(m)
        d = batched_lpips(model, to_model_space(arr["restored"]), to_model_space(arr["original"]),
                          cfg["eval"]["batch_size"], batches, f"lpips-m{m}")
        n = len(d)
        values[column] = float(d.mean())
        cells[column] = CellData(values[column], items=d.detach().cpu().numpy().astype(np.float64))
        sems[column] = float(d.std() / np.sqrt(n)) if n > 1 else float("nan")
        print(f"{cfg['row']['name']} {column}: LPIPS {values[column]:.4f} +- {sems[column]:.4f} (n={n})")
    return {"values": values, "sem": sems, "n_images": n, "feature_extractor": extractor, "cells": cells}


def _samples(deps: dict[str, JobDir]) -> tuple[dict[str, Any], samples_format.Samples]:
    return deps["samples"].result(), samples_format.read(deps["samples"])


def segmentation(cfg: dict, deps: dict[str, JobDir], batches: BatchCheckpoints = BatchCheckpoints(None)
                 ) -> dict[str, Any]:
    """Table 4: per-pixel / per-class accuracy and class IoU of the generated label maps,
    all three from one confusion matrix over the test set (ignore label excluded; no network
    pass, so nothing to resume)."""
    from repro.metrics.segmentation import confusion_matrix, segmentation_scores

    res, arr = _samples(deps)
    matrix = confusion_matrix(arr["ids_pred"], arr["ids_true"], res["num_classes"])
    scores = segmentation_scores(matrix)
    # Pooled scores: their intervals resample images and recompute from the summed per-image matrices.
    per_image = np.stack([confusion_matrix(p, t, res["num_classes"]) for p, t in zip(arr["ids_pred"], arr["ids_true"])])
    per_image = per_image.astype(np.int32)
    print(f"{cfg['row']['name']}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return {"values": {c: scores[c] for c in cfg["table"]["columns"]}, "n_images": int(len(arr["ids_true"])),
            "feature_extractor": "none (generated label images read as classes by nearest palette colour)",
            "confusion_matrix": matrix.tolist(),
            "cells": {c: CellData(scores[c], items=per_image, pooled=c) for c in cfg["table"]["columns"]}}


def generation_extractor(cfg: dict, deps: dict[str, JobDir]):
    """The profile's IS/FID network and its caption name: the embedded FeatureNet or Inception-v3."""
    from repro.metrics import featurenet_extractor, inception_extractor

    kind = cfg["features"]["kind"]
    if kind == "embedded":
        return (featurenet_extractor(deps["features"] / "feature_net.pt", cuda=False),
                "FeatureNet trained here on the embedded data (not Inception)")
    if kind == "pretrained":
        return inception_extractor(Path(cfg["weights"]["inception"]).expanduser()), "Inception-v3 (torch-fidelity)"
    raise UserError(f"unknown features.kind {kind!r}: choose embedded or pretrained")


def translation_fidelity(cfg: dict, deps: dict[str, JobDir], batches: BatchCheckpoints = BatchCheckpoints(None)
                         ) -> dict[str, Any]:
    """night2day (Appendix E.1): FID and IS of the generated day images; FID against the test
    set's real day images. The ground-truth row is that reference itself: IS only."""
    from repro.metrics.fidelity import generation_metrics_with_replicates

    res, arr = _samples(deps)
    extractor, name = generation_extractor(cfg, deps)
    n = len(arr["generated"])
    feats = batched_features(arr["generated"], extractor, cfg["eval"]["batch_size"], batches)
    m, reps = generation_metrics_with_replicates(arr["generated"], arr["truth"], extractor,
                                                 batch_size=cfg["eval"]["batch_size"], isc_splits=min(10, n),
                                                 n_resamples=GENERATION_RESAMPLES, seed=_row_seed(cfg),
                                                 features=feats)
    if res["method"] == "ground_truth":
        m["FID"] = float("nan")   # FID of the reference against itself is 0 by construction
    print(f"{cfg['row']['name']}: FID {m['FID']:.3f}, IS {m['IS']:.3f} (n={n})")
    columns = cfg["table"]["columns"]
    return {"values": {c: m[c] for c in columns}, "n_images": n, "feature_extractor": name,
            "all_metrics": m, "cells": {c: CellData(m[c], replicates=reps[c]) for c in columns}}


def representation_agreement(cfg: dict, deps: dict[str, JobDir],
                             batches: BatchCheckpoints = BatchCheckpoints(None)) -> dict[str, Any]:
    """Appendix E.4 with a number: mean cosine similarity between each jointly generated
    representation and the representation of its jointly generated image (`pairing: joint`),
    or of another sample's image (`pairing: random`), the chance level."""
    from repro.tasks.representation import load_embedder

    res, arr = _samples(deps)
    embed, name = load_embedder(cfg, deps)
    images, reps = to_model_space(arr["images"]), torch.from_numpy(arr["representations"]).float()
    bs = cfg["eval"]["batch_size"]
    with torch.no_grad():
        target = torch.cat([batches.tensor("embeddings", b, lambda i=i: embed(images[i:i + bs]))
                            for b, i in enumerate(range(0, len(images), bs))])
    pairing = cfg["row"].get("pairing", "joint")
    if pairing == "random":
        # Samples are independent draws, so pairing each one with the next sample's image
        # is a random pairing that never matches a sample with itself.
        target = target.roll(1, dims=0)
    elif pairing != "joint":
        raise UserError(f"unknown pairing {pairing!r}: choose joint or random")
    cos = torch.nn.functional.cosine_similarity(reps, target, dim=1)
    column = cfg["table"]["columns"][0]
    print(f"{cfg['row']['name']}: cosine {cos.mean():.4f} +- {cos.std() / np.sqrt(len(cos)):.4f} (n={len(cos)})")
    return {"values": {column: float(cos.mean())}, "sem": {column: float(cos.std() / np.sqrt(len(cos)))},
            "n_images": int(len(cos)), "feature_extractor": name,
            "cells": {column: CellData(float(cos.mean()), items=cos.detach().cpu().numpy().astype(np.float64))}}


def generation_reference(cfg: dict) -> tuple[np.ndarray | Path, str]:
    """The real side of Tables 2-3: an ADM reference batch (.npz, `eval.reference_batch`) when
    configured, else the first `eval.reference.n` images of the `eval.reference.split` split."""
    from repro.data.pixels import to_uint8
    from repro.data.registry import load_images

    batch = cfg["eval"].get("reference_batch")
    if batch:
        return Path(batch).expanduser(), f"ADM reference batch {Path(batch).name}"
    ref = cfg["eval"]["reference"]
    images = load_images(cfg["data"], ref["split"])
    n = min(ref["n"], len(images))
    return to_uint8(images.images(np.arange(n))), f"{n} {ref['split']} images of {cfg['data']['name']}"


def generation(cfg: dict, deps: dict[str, JobDir], batches: BatchCheckpoints = BatchCheckpoints(None)
               ) -> dict[str, Any]:
    """Tables 2-3: IS, FID, sFID, Precision and Recall (k = 3) of a row's saved samples.

    One feature pass over the samples (repro.metrics.fidelity); the reference statistics are
    cached by content hash under the store's `_cache/fidelity/`, so re-evaluating reads only
    the saved samples and the cache.
    """
    from repro.data.pixels import to_uint8
    from repro.metrics.fidelity import generation_metrics_with_replicates

    if is_reference(cfg["row"]):
        samples = to_uint8(reference_images(cfg)[1])
    else:
        samples = samples_format.read(deps["samples"])["images"]
    extractor, name = generation_extractor(cfg, deps)
    reference, ref_name = generation_reference(cfg)
    cache = deps["features" if is_reference(cfg["row"]) else "samples"].path.parent / "_cache" / "fidelity"
    n = len(samples)
    feats = batched_features(samples, extractor, cfg["eval"]["batch_size"], batches)
    m, reps = generation_metrics_with_replicates(samples, reference, extractor, cache, features=feats,
                                                 batch_size=cfg["eval"]["batch_size"],
                                                 isc_splits=min(cfg["eval"].get("isc_splits", 10), n),
                                                 prc_neighborhood=cfg["eval"].get("prc_k", 3),
                                                 n_resamples=GENERATION_RESAMPLES, seed=_row_seed(cfg))
    print(f"{cfg['row']['name']}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()) + f" (n={n}, vs {ref_name})")
    columns = cfg["table"]["columns"]
    return {"values": {c: m[c] for c in columns}, "n_images": n, "feature_extractor": name,
            "reference": ref_name, "cells": {c: CellData(m[c], replicates=reps[c]) for c in columns}}


def _row_seed(cfg: dict) -> int:
    """The bootstrap seed of a row: distinct per row, so that two rows' replicates are independent
    draws (the unpaired test pairs them index by index), and the same on every re-evaluation."""
    import zlib

    return zlib.crc32(cfg["row"]["name"].encode("utf-8"))


def reads(view: dict) -> list[str]:
    """What the configured evaluator reads of its job's view (repro.jobs.job.select keeps exactly
    these; tests/test_job_reads.py checks them against the code). Rows are read for their name
    only: what a row asks of sampling is in its samples job's key, which this job's key includes."""
    name, ev = view["table"]["evaluation"], view.get("eval", {})
    pretrained = view.get("features", {}).get("kind") == "pretrained"
    # eval.sleep_s: tests only (set on the job by tests/test_sampling_resume.py to slow each batch
    # enough to kill it between two); the plan never puts it in a view, so no key holds it
    common = ["table.evaluation", "table.columns", "row.name", "row.method", "eval.sleep_s"]
    extractor = ["features.kind", *(["weights.inception"] if pretrained else [])]
    # calibration rows read test images and how to degrade them instead of a samples job
    reference = (["row.kind", "row.strength", "eval.n_images", *data_reads(view["data"], "test")]
                 if is_reference(view["row"]) else [])
    if name == "lpips_restoration":
        return [*common, "features.kind", *(["weights.lpips_alexnet"] if pretrained else []),
                *(reference or ["eval.mask_counts"]), "eval.batch_size"]
    if name == "translation_fidelity":
        return [*common, *extractor, "eval.batch_size"]
    if name == "representation_agreement":   # the CLIP file only where no feature network is trained
        return [*common, "row.pairing", "eval.batch_size", *(["weights.clip", "task.clip"] if pretrained else [])]
    if name == "generation":
        real = (["eval.reference", *data_reads(view["data"], ev["reference"]["split"])]
                if not ev.get("reference_batch") else [])
        return [*common, *extractor, "eval.batch_size", "eval.isc_splits", "eval.prc_k", "eval.reference_batch",
                *real, *reference]
    return common   # segmentation: the saved label maps only


EVALUATORS: dict[str, Callable[[dict, dict[str, JobDir], BatchCheckpoints], dict[str, Any]]] = {
    "lpips_restoration": lpips_restoration,
    "generation": generation,
    "segmentation": segmentation,
    "translation_fidelity": translation_fidelity,
    "representation_agreement": representation_agreement,
}


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    """Score the row; beside result.json, `cells.npz` keeps what each cell's interval and the
    claim tests need (repro.report.cells), and the result gains `intervals: {column: [lo, hi]}`."""
    name = cfg["table"]["evaluation"]
    if name not in EVALUATORS:
        raise UserError(f"unknown evaluation {name!r}: choose one of {', '.join(EVALUATORS)}")
    batches = BatchCheckpoints(out.path, sleep_s=cfg.get("eval", {}).get("sleep_s", 0.0))
    result = EVALUATORS[name](cfg, deps, batches)
    cells: dict[str, CellData] = result.pop("cells")
    columns = list(cfg["table"]["columns"])
    atomic_save_npz(out / CELLS_FILE, **arrays_of_cells(columns, cells))
    intervals, methods = column_intervals(cells, columns)
    result["intervals"] = intervals
    result["interval_method"] = {"confidence": CONFIDENCE, "methods": methods,
                                 "generation_resamples": GENERATION_RESAMPLES}
    return result


def interval_note(results: dict[str, dict[str, Any]]) -> str:
    """The caption's sentence: how the rows' intervals were computed (method, resamples, images)."""
    methods = sorted({m for res in results.values() for m in res.get("interval_method", {}).get("methods", {}).values()})
    n = sorted({int(res["n_images"]) for res in results.values()})
    said = []
    for m in methods:
        if m == "BCa":
            said.append("BCa bootstrap over the evaluation images (scipy.stats.bootstrap, 9999 resamples)")
        elif m.startswith("percentile bootstrap over images"):
            said.append("percentile bootstrap over images recomputing the pooled score from the resampled images' "
                        "confusion matrices (2000 resamples)")
        elif m.startswith("percentile bootstrap over generated"):
            said.append(f"percentile bootstrap over the generated samples, each metric recomputed on "
                        f"{GENERATION_RESAMPLES} resamples against the fixed reference statistics (FID/sFID lean high, "
                        f"Recall low: resampling repeats samples)")
    from repro.metrics.fidelity import PRC_REPLICATES_MAX

    if any(m.startswith("percentile bootstrap over generated") for m in methods) and n[-1] > PRC_REPLICATES_MAX:
        said.append(f"no Precision/Recall intervals beyond {PRC_REPLICATES_MAX} samples (their resampling keeps N x N distances)")
    if not said:
        return ""
    return (f"Intervals: 95%, {'; '.join(said)}; {'/'.join(map(str, n))} images per row. Claims: tests of the "
            f"difference (paired over images where rows score the same images, else unpaired), held / not held "
            f"when its interval excludes 0, inconclusive otherwise.")


def read_cells(job_dir: JobDir) -> dict[str, CellData]:
    """A finished evaluate job's cells (point values plus per-image data or replicates); cells
    without data where the job predates `cells.npz`."""
    res = job_dir.result()
    columns = list(res["values"])
    path = job_dir / CELLS_FILE
    if not path.is_file():
        return cells_from_arrays(columns, res["values"], {})
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return cells_from_arrays([str(c) for c in arrays.get("columns", columns)], res["values"], arrays)
