"""Generation metrics of the ADM evaluation suite: IS, FID, sFID, Precision, Recall (Appendix E).

    IS        = exp( E_x KL( p(y|x) || p(y) ) )                       (Salimans et al., 2016)
    FID       = |mu_g - mu_r|^2 + tr( S_g + S_r - 2 (S_g S_r)^{1/2} )  on pooled features (Heusel et al., 2017)
    sFID      = the same Frechet distance on spatial features          (Nash et al., 2021)
    Precision = fraction of samples inside the real k-NN manifold      (Kynkaanniemi et al., 2019, k = 3)
    Recall    = fraction of real images inside the sample k-NN manifold

Every number comes from torch-fidelity's own functions (feature extraction loop, ISC, FID
statistics and distance, PRC); this module only arranges them so that one feature pass
per image set serves all five metrics, and caches the reference side by content hash.
The extractor is one of `repro.metrics.feature_extractors` (Inception for the paper
profile, FeatureNet for the embedded one).

Why one module of ~360 lines: the five metrics share one feature pass, one cached reference
statistics file and the bootstrap replicates of their intervals; splitting them would compute
the features once per metric.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric
from torch_fidelity.utils import get_featuresdict_from_dataset

from repro.errors import UserError
from repro.io import atomic_save_npz

CACHE_VERSION = 1
# Beyond this many points torch-fidelity's blockwise P/R avoids an N x N distance matrix in RAM.
_PRC_FULL_MATRIX_MAX = 10_000
# Bootstrap replicates of Precision / Recall: distance matrices held in memory, affordable up to this many samples
# (the embedded profiles); at the paper's 50K their intervals are left out (said in the caption).
PRC_REPLICATES_MAX = 10_000


class UInt8Images(Dataset):
    """uint8 images [N, H, W, 3] served as torch-fidelity expects them: uint8 [3, H, W] tensors."""

    def __init__(self, images: np.ndarray):
        _check_images(images)
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def _check_images(images: np.ndarray, what: str = "images") -> None:
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3):
        got = f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        raise UserError(f"{what} must be uint8 arrays of shape [N, H, W, 3], got {got}")
    if len(images) < 2:
        raise UserError(f"{what}: need at least 2 images for covariance-based metrics, got {len(images)}")


# --- the statistics, each a thin call into torch-fidelity ------------------------------------


def gaussian_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] of features [N, D], in float64."""
    stats = fid_features_to_statistics(features.detach().cpu().double())
    return stats["mu"], stats["sigma"]


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (FID on pooled, sFID on spatial features)."""
    as64 = lambda a: np.asarray(a, dtype=np.float64)
    s1, s2 = {"mu": as64(mu1), "sigma": as64(sigma1)}, {"mu": as64(mu2), "sigma": as64(sigma2)}
    return float(fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID])


class FrechetToReference:
    """Frechet distance of many feature sets to one fixed reference N(mu_r, S_r), fast.

    The same quantity as `frechet_distance` (torch-fidelity's, which the point estimates use),
    organised for bootstrap replicates: with A = S_r^{1/2} computed once,
    tr (S_g S_r)^{1/2} = tr (A S_g A)^{1/2}, a symmetric PSD matrix whose eigenvalues come
    from `eigvalsh`; when there are fewer samples than dimensions, S_g = X^T X / (N - 1) (X the
    centred features) and the nonzero eigenvalues of A S_g A are those of the N x N matrix
    X A A X^T / (N - 1). torch-fidelity's general `eigvals` of S_g S_r costs ~0.1 s per call at
    256-d; this is what makes hundreds of replicates per row affordable.
    """

    def __init__(self, mu: np.ndarray, sigma: np.ndarray):
        w, v = np.linalg.eigh(np.asarray(sigma, dtype=np.float64))
        self.mu, self.trace_r = np.asarray(mu, dtype=np.float64), float(np.trace(sigma))
        self.sqrt_r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    def __call__(self, features: np.ndarray) -> float:
        x = np.asarray(features, dtype=np.float64)
        mu = x.mean(axis=0)
        xc = (x - mu) / np.sqrt(len(x) - 1)
        y = xc @ self.sqrt_r                      # [N, D]
        inner = y @ y.T if len(x) < x.shape[1] else y.T @ y
        eig = np.clip(np.linalg.eigvalsh(inner), 0, None)
        trace_g = float(np.sum(xc * xc))
        return float(np.sum((mu - self.mu) ** 2) + trace_g + self.trace_r - 2 * np.sum(np.sqrt(eig)))


class PrecisionRecallResampler:
    """torch-fidelity's Precision / Recall (`calculate_precision_recall_full`) of resamples of one
    generated set against a fixed real set, from distances computed once.

    Per resample `idx` of the generated features: a generated sample's k-NN radius is the
    (k+1)-th smallest of its distances to the resampled set (itself and its repeats included,
    as torch-fidelity computes it on the resampled features); whether it lies inside the real
    manifold does not depend on the resample. Replaces a k-NN pass over the real set per
    replicate (the dominant cost at 1000 real images) by a gather of precomputed distances.
    """

    def __init__(self, generated: torch.Tensor, real: torch.Tensor, k: int = 3):
        g, r = generated.detach().cpu().float(), real.detach().cpu().float()
        real_radii = torch.cdist(r, r).kthvalue(k + 1, dim=1).values
        self.gen_real = torch.cdist(g, r)                                      # [N, M]
        self.inside_real = (self.gen_real <= real_radii).any(dim=1).double().numpy()
        self.gen_gen = torch.cdist(g, g)                                       # [N, N]
        self.k = k

    def __call__(self, idx: np.ndarray) -> tuple[float, float]:
        sel = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        radii = self.gen_gen[sel][:, sel].kthvalue(self.k + 1, dim=1).values   # [n]
        recall = (self.gen_real[sel].T <= radii).any(dim=1).float().mean().item()
        return float(self.inside_real[np.asarray(idx)].mean()), recall


def inception_score(logits: torch.Tensor, splits: int = 10, rng_seed: int = 2020) -> float:
    """Mean IS over `splits` shuffled splits (torch-fidelity's defaults: 10 splits, seed 2020)."""
    splits = max(1, min(splits, len(logits)))
    return float(isc_features_to_metric(logits.detach().cpu(), splits=splits, shuffle=True, rng_seed=rng_seed)[KEY_METRIC_ISC_MEAN])


def precision_recall(generated: torch.Tensor, real: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall with k-NN manifolds (k = 3 as in the ADM suite)."""
    big = max(len(generated), len(real)) > _PRC_FULL_MATRIX_MAX
    out = prc_features_to_metric(
        generated.detach().cpu().float(), real.detach().cpu().float(), prc_neighborhood=k, save_cpu_ram=big, verbose=False
    )
    return float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])


# --- feature extraction and the reference side ----------------------------------------------


def _layers(extractor: FeatureExtractorBase) -> dict[str, str]:
    layers = {m: extractor.get_default_feature_layer_for_metric(m) for m in ("isc", "fid", "prc", "sfid")}
    missing = sorted(set(layers.values()) - set(extractor.get_requested_features_list()))
    if missing:
        raise ValueError(f"extractor {extractor.get_name()} was built without features {missing}")
    return layers


@torch.no_grad()
def extract_features(
    images: np.ndarray, extractor: FeatureExtractorBase, batch_size: int = 64, progress: bool = False
) -> dict[str, torch.Tensor]:
    """One pass of `extractor` over uint8 images [N, H, W, 3] -> {feature name: [N, D]} (CPU tensors)."""
    cuda = next(extractor.parameters()).is_cuda
    # save_cpu_ram=True keeps the DataLoader in-process: the images are already in memory.
    return get_featuresdict_from_dataset(UInt8Images(images), extractor, batch_size, cuda, True, progress)


@dataclass(frozen=True)
class ReferenceStats:
    """What the metrics need from the real images: Gaussian fits (pooled, spatial) + pooled features for P/R."""

    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray
    sigma_s: np.ndarray
    pooled: np.ndarray | None  # [N, D] float32; None for statistics-only references (no P/R then)
    source: str = ""

    @classmethod
    def from_features(cls, features: dict[str, torch.Tensor], layers: dict[str, str], source: str = "") -> "ReferenceStats":
        mu, sigma = gaussian_statistics(features[layers["fid"]])
        mu_s, sigma_s = gaussian_statistics(features[layers["sfid"]])
        pooled = features[layers["prc"]].detach().cpu().float().numpy()
        return cls(mu, sigma, mu_s, sigma_s, pooled, source)

    def save(self, path: str | os.PathLike) -> Path:
        arrays = dict(mu=self.mu, sigma=self.sigma, mu_s=self.mu_s, sigma_s=self.sigma_s, cache_version=CACHE_VERSION)
        if self.pooled is not None:
            arrays["pooled"] = self.pooled
        return atomic_save_npz(path, **arrays)


def images_key(images: np.ndarray, extractor) -> str:
    """Cache key: sha256 of the extractor's identity (name + weights) and the image bytes."""
    h = hashlib.sha256(f"repro-fidelity-reference-v{CACHE_VERSION}".encode())
    h.update(extractor.fingerprint().encode())
    h.update(f"{images.dtype}{images.shape}".encode())
    h.update(memoryview(np.ascontiguousarray(images)).cast("B"))
    return h.hexdigest()


def _stats_from_npz(data, path: Path) -> ReferenceStats:
    pooled = np.asarray(data["pooled"], dtype=np.float32) if "pooled" in data else None
    as64 = lambda k: np.asarray(data[k], dtype=np.float64)
    return ReferenceStats(as64("mu"), as64("sigma"), as64("mu_s"), as64("sigma_s"), pooled, source=str(path))


def reference_statistics(
    reference: np.ndarray | str | os.PathLike | ReferenceStats,
    extractor: FeatureExtractorBase,
    cache_dir: str | os.PathLike | None,
    batch_size: int = 64,
    progress: bool = False,
) -> ReferenceStats:
    """Statistics of the real side, from images (cached by content hash) or a reference `.npz`.

    `reference` may be
      * uint8 images [N, H, W, 3];
      * an ADM-suite reference batch `.npz`: with `arr_0` (images; used in preference to any
        stored statistics, so that samples and references go through the same extractor and
        P/R has the reference features), or with only mu / sigma / mu_s / sigma_s (FID and
        sFID only; Precision / Recall then come out NaN);
      * an `.npz` written by `ReferenceStats.save` (this module's cache format);
      * a `ReferenceStats`.
    """
    if isinstance(reference, ReferenceStats):
        return reference
    source = "images"
    if isinstance(reference, (str, os.PathLike)):
        path = Path(reference)
        if not path.is_file():
            raise UserError(f"reference batch {path} not found; point the config at an ADM reference .npz or an image array")
        with np.load(path, allow_pickle=False) as data:
            if "arr_0" in data:
                reference, source = data["arr_0"], str(path)
            elif {"mu", "sigma", "mu_s", "sigma_s"} <= set(data.files):
                return _stats_from_npz(data, path)
            else:
                raise UserError(f"{path} holds neither images (arr_0) nor statistics (mu, sigma, mu_s, sigma_s)")
    _check_images(reference, "reference images")
    layers = _layers(extractor)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{extractor.get_name()}-{images_key(reference, extractor)[:32]}.npz"
        if cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as data:
                    return _stats_from_npz(data, cache)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                # A damaged cache entry (truncated, bit-flipped: zip CRCs catch it) is recomputed.
                print(f"fidelity cache {cache} is damaged ({type(err).__name__}): recomputing it")
    stats = ReferenceStats.from_features(extract_features(reference, extractor, batch_size, progress), layers, source)
    if cache is not None:
        stats.save(cache)
    return stats


def compute_generation_metrics(
    samples: np.ndarray,
    reference: np.ndarray | str | os.PathLike | ReferenceStats,
    extractor: FeatureExtractorBase,
    cache_dir: str | os.PathLike | None = None,
    *,
    batch_size: int = 64,
    isc_splits: int = 10,
    prc_neighborhood: int = 3,
    progress: bool = False,
) -> dict[str, float]:
    """IS, FID, sFID, Precision and Recall of uint8 samples [N, H, W, 3] against a reference.

    One feature pass over the samples; the reference side is read from `cache_dir` when its
    images were seen before with the same extractor weights.
    """
    _check_images(samples, "samples")
    layers = _layers(extractor)
    ref = reference_statistics(reference, extractor, cache_dir, batch_size, progress)
    feats = extract_features(samples, extractor, batch_size, progress)
    return metrics_from_features(feats, ref, layers, isc_splits=isc_splits, prc_neighborhood=prc_neighborhood,
                                 source=extractor.get_name())


def metrics_from_features(feats: dict[str, torch.Tensor], ref: ReferenceStats, layers: dict[str, str], *,
                          isc_splits: int = 10, prc_neighborhood: int = 3, source: str = "") -> dict[str, float]:
    """IS, FID, sFID, Precision and Recall of the samples' features (`extract_features`) against `ref`."""
    mu, sigma = gaussian_statistics(feats[layers["fid"]])
    mu_s, sigma_s = gaussian_statistics(feats[layers["sfid"]])
    for name, ours, theirs in (("pooled", mu, ref.mu), ("spatial", mu_s, ref.mu_s)):
        if ours.shape != theirs.shape:
            raise UserError(
                f"reference {ref.source or 'statistics'} has {theirs.shape[0]}-d {name} features but "
                f"{source or 'the extractor'} gives {ours.shape[0]}-d: the reference was computed with another "
                f"feature network"
            )
    if ref.pooled is not None:
        precision, recall = precision_recall(feats[layers["prc"]], torch.from_numpy(ref.pooled), prc_neighborhood)
    else:
        precision = recall = float("nan")
    return {
        "IS": inception_score(feats[layers["isc"]], isc_splits),
        "FID": frechet_distance(mu, sigma, ref.mu, ref.sigma),
        "sFID": frechet_distance(mu_s, sigma_s, ref.mu_s, ref.sigma_s),
        "Precision": precision,
        "Recall": recall,
    }


def generation_metrics_with_replicates(
    samples: np.ndarray,
    reference: np.ndarray | str | os.PathLike | ReferenceStats,
    extractor: FeatureExtractorBase,
    cache_dir: str | os.PathLike | None = None,
    *,
    n_resamples: int = 200,
    seed: int = 0,
    batch_size: int = 64,
    isc_splits: int = 10,
    prc_neighborhood: int = 3,
    features: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """`compute_generation_metrics` plus `n_resamples` bootstrap replicates of each metric.

    `features`: the samples' `extract_features` output when the caller has it already (an
    evaluation job extracts them batch by batch, to resume after a kill); else extracted here.

    Each replicate resamples the generated samples' features with replacement (one feature
    pass, no re-extraction) and recomputes all five metrics against the *fixed* reference
    statistics (`repro.report.uncertainty.fid_interval` does the same for FID alone): the
    replicates measure the variability due to the finite generated set (FID / sFID replicates
    through `FrechetToReference`; P/R only up to PRC_REPLICATES_MAX samples). Resampling repeats
    samples, which lowers their diversity: FID / sFID lean high, and a repeated sample is
    its own nearest neighbour, which shrinks the sample manifold (Recall leans low). The
    replicates serve percentile intervals and unpaired row-vs-row tests (repro.report.cells).
    """
    from scipy import stats

    _check_images(samples, "samples")
    layers = _layers(extractor)
    ref = reference_statistics(reference, extractor, cache_dir, batch_size)
    feats = features if features is not None else extract_features(samples, extractor, batch_size)
    point = metrics_from_features(feats, ref, layers, isc_splits=isc_splits, prc_neighborhood=prc_neighborhood,
                                  source=extractor.get_name())
    names = list(point)
    fid, sfid = FrechetToReference(ref.mu, ref.sigma), FrechetToReference(ref.mu_s, ref.sigma_s)
    pooled, spatial = feats[layers["fid"]].double().numpy(), feats[layers["sfid"]].double().numpy()
    # P/R replicates keep N x N and N x M distance matrices; beyond this many samples they are skipped
    with_prc = ref.pooled is not None and len(samples) <= PRC_REPLICATES_MAX
    prc = PrecisionRecallResampler(feats[layers["prc"]], torch.from_numpy(ref.pooled), prc_neighborhood) if with_prc else None

    def statistic(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        sel = torch.as_tensor(idx)
        precision, recall = prc(idx) if prc is not None else (float("nan"), float("nan"))
        m = {"IS": inception_score(feats[layers["isc"]][sel], isc_splits), "FID": fid(pooled[idx]),
             "sFID": sfid(spatial[idx]), "Precision": precision, "Recall": recall}
        return np.array([m[k] for k in names])

    res = stats.bootstrap((np.arange(len(samples)),), statistic, n_resamples=n_resamples, method="percentile",
                          vectorized=False, random_state=np.random.default_rng(seed))
    return point, {k: np.asarray(res.bootstrap_distribution[i], dtype=np.float64) for i, k in enumerate(names)}
