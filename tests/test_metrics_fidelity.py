"""IS / FID / sFID / Precision / Recall through torch-fidelity (repro.metrics.fidelity)."""
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
import torch_fidelity

from repro.errors import UserError
from repro.metrics.feature_extractors import (
    FEATURENET_NAME,
    INCEPTION_FILE,
    featurenet_extractor,
    inception_extractor,
)
from repro.metrics.feature_net import FeatureNet, FeatureNetConfig, save_feature_net
from repro.metrics.fidelity import (
    UInt8Images,
    compute_generation_metrics,
    extract_features,
    frechet_distance,
    gaussian_statistics,
    inception_score,
    precision_recall,
)

# --- oracles written from the definitions, with numpy / scipy ---------------------------------


def fid_numpy(x: np.ndarray, y: np.ndarray) -> float:
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    with warnings.catch_warnings():
        # ReLU units that never fire make network covariances singular; sqrtm warns but the
        # square root of the PSD product is still accurate (checked against eigh-based forms).
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def precision_recall_numpy(gen: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    """Kynkaanniemi et al. 2019: a point is covered if within the k-th NN radius of some point of the other set."""
    def radii(a):
        d = np.linalg.norm(a[:, None] - a[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def covered(q, ref):
        d = np.linalg.norm(q[:, None] - ref[None], axis=-1)
        return (d <= radii(ref)[None]).any(axis=1).mean()

    return float(covered(gen, real)), float(covered(real, gen))


def is_numpy(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    py = p.mean(0, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(py))).sum(1).mean()))


# --- statistics --------------------------------------------------------------------------------


def test_fid_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))
    y = rng.normal(loc=0.5, size=(300, 12)) @ rng.normal(size=(12, 12))
    mu1, s1 = gaussian_statistics(torch.from_numpy(x))
    mu2, s2 = gaussian_statistics(torch.from_numpy(y))
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(fid_numpy(x, y), rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_precision_recall_known_cases():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.normal(size=(50, 4))).float()
    assert precision_recall(a, a.clone(), k=3) == (1.0, 1.0)
    assert precision_recall(a, a + 1000.0, k=3) == (0.0, 0.0)
    # Hand-checked, 1-D, k=3. Real {0,1,2,3}: 3rd-NN radii 3,2,2,3 -> real manifold [-3, 6].
    # Generated {5,10,100,1000}: only 5 is inside -> precision 1/4. Generated radii are
    # 995, 990, 900, 995, so the ball around 5 covers every real point -> recall 1.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    gen = torch.tensor([[5.0], [10.0], [100.0], [1000.0]])
    assert precision_recall(gen, real, k=3) == (0.25, 1.0)


def test_precision_recall_matches_brute_force_definition():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(60, 3))
    gen = rng.normal(loc=1.0, scale=0.8, size=(45, 3))
    got = precision_recall(torch.from_numpy(gen).float(), torch.from_numpy(real).float(), k=3)
    expected = precision_recall_numpy(gen.astype(np.float32), real.astype(np.float32), k=3)
    assert got == pytest.approx(expected, abs=1e-6)  # float32 means; one point is 1/45
    assert 0 < got[0] < 1 and 0 < got[1] < 1


def test_inception_score_hand_formula():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=3.0, size=(200, 10))
    assert inception_score(torch.from_numpy(logits), splits=1) == pytest.approx(is_numpy(logits), rel=1e-9)
    assert inception_score(torch.zeros(50, 10), splits=5) == pytest.approx(1.0)
    # Confident and balanced over 8 classes -> IS -> 8.
    peaked = torch.full((80, 8), -50.0)
    peaked[torch.arange(80), torch.arange(80) % 8] = 50.0
    assert inception_score(peaked, splits=1) == pytest.approx(8.0, rel=1e-6)


# --- extractors ---------------------------------------------------------------------------------


def small_net(seed=0, spatial_stage=5) -> FeatureNet:
    """A random FeatureNet with O(1) features (variance-preserving init, live ReLUs).

    spatial_stage=5 (2x2 map, 7*2*2 = 28 dims) keeps covariances small next to the sample count.
    """
    torch.manual_seed(seed)
    net = FeatureNet(FeatureNetConfig(num_classes=4, widths=(8, 8, 16, 16, 24), spatial_stage=spatial_stage))
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.constant_(m.bias, 0.1)
    return net.eval()


def uint8_images(n, seed, size=16, lo=0, hi=256) -> np.ndarray:
    """Flat colours drawn from [lo, hi) per image, plus pixel noise."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(lo, hi, (n, 1, 1, 3))
    return np.clip(colour + rng.integers(-40, 41, (n, size, size, 3)), 0, 255).astype(np.uint8)


def test_featurenet_extractor_features_and_sfid_shape():
    net = small_net(spatial_stage=3)
    ext = featurenet_extractor(net, cuda=False)
    imgs = uint8_images(10, 0)
    feats = extract_features(imgs, ext, batch_size=4)
    assert feats["spatial"].shape == (10, 7 * 8 * 8)  # 7 channels of the 8x8 stage-3 map
    assert feats["pooled"].shape == (10, 24) and feats["logits"].shape == (10, 4)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(feats["spatial"], net.spatial(x))
        torch.testing.assert_close(feats["pooled"], net.pooled(x))


def test_inception_extractor_gives_adm_spatial_features(tmp_path, monkeypatch):
    """Paper path with random weights (the real file cannot be downloaded here): 7*17*17 = 2023."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    with monkeypatch.context() as m:  # build a randomly initialised Inception to get a state dict
        m.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        m.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        torch.manual_seed(0)
        state = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    weights = tmp_path / INCEPTION_FILE
    torch.save(state, weights)
    ext = inception_extractor(weights, cuda=False)
    feats = extract_features(uint8_images(2, 1, size=32), ext)
    assert feats["spatial"].shape == (2, 2023)
    assert feats["2048"].shape == (2, 2048) and feats["logits_unbiased"].shape == (2, 1008)
    assert (feats["spatial"] >= 0).all()  # a ReLU output, like TF's mixed_6/conv:0
    with pytest.raises(UserError, match=INCEPTION_FILE):
        inception_extractor(tmp_path / "absent" / INCEPTION_FILE)
    with pytest.raises(UserError, match=INCEPTION_FILE):
        inception_extractor(None)


# --- end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    ref = uint8_images(160, 10)
    close = uint8_images(140, 11)                     # same distribution as ref
    far = uint8_images(140, 12, lo=100, hi=180)       # a narrower range of colours
    return ref, close, far


def test_metrics_agree_with_independent_computation(data):
    ref, close, _ = data
    net = small_net()
    out = compute_generation_metrics(close, ref, featurenet_extractor(net, cuda=False), cache_dir=None)
    assert set(out) == {"IS", "FID", "sFID", "Precision", "Recall"}
    to_x = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        g, r = net.embed(to_x(close)), net.embed(to_x(ref))
    assert out["FID"] == pytest.approx(fid_numpy(g["pooled"].double().numpy(), r["pooled"].double().numpy()), rel=1e-6)
    assert g["spatial"].shape == (140, 28)
    assert out["sFID"] == pytest.approx(fid_numpy(g["spatial"].double().numpy(), r["spatial"].double().numpy()), rel=1e-6)
    p, rc = precision_recall_numpy(g["pooled"].numpy(), r["pooled"].numpy(), k=3)
    assert (out["Precision"], out["Recall"]) == pytest.approx((p, rc), abs=1e-6)


def test_metrics_rank_distributions(data):
    ref, close, far = data
    ext = featurenet_extractor(small_net(), cuda=False)
    near_m = compute_generation_metrics(close, ref, ext)
    far_m = compute_generation_metrics(far, ref, ext)
    assert near_m["FID"] < far_m["FID"] and near_m["sFID"] < far_m["sFID"]
    assert near_m["Recall"] > far_m["Recall"]


def test_same_numbers_as_torch_fidelity_calculate_metrics(tmp_path, data):
    """The registered extractor works in torch-fidelity's own pipeline, with the same results."""
    ref, close, _ = data
    ckpt = save_feature_net(small_net(), tmp_path / "fnet.pt")
    ours = compute_generation_metrics(close, ref, featurenet_extractor(ckpt, cuda=False))
    theirs = torch_fidelity.calculate_metrics(
        input1=UInt8Images(close), input2=UInt8Images(ref), isc=True, fid=True, prc=True,
        feature_extractor=FEATURENET_NAME, feature_extractor_weights_path=str(ckpt),
        cuda=False, cache=False, verbose=False, save_cpu_ram=True,
    )
    assert ours["IS"] == pytest.approx(theirs["inception_score_mean"], rel=1e-5)
    assert ours["FID"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    assert ours["Precision"] == theirs["precision"] and ours["Recall"] == theirs["recall"]


def test_reference_cache_skips_the_reference_pass(tmp_path, data):
    ref, close, _ = data
    ext = featurenet_extractor(small_net(), cuda=False)
    calls = []
    ext.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    first = compute_generation_metrics(close, ref, ext, cache_dir=tmp_path, batch_size=64)
    assert sorted(calls) == sorted([64, 64, 32] + [64, 64, 12])  # reference (160) + samples (140)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    calls.clear()
    second = compute_generation_metrics(close, ref, ext, cache_dir=tmp_path, batch_size=64)
    assert calls == [64, 64, 12]  # samples only
    assert second == first
    # Other weights -> another cache entry, not a stale hit.
    other = featurenet_extractor(small_net(seed=1), cuda=False)
    compute_generation_metrics(close, ref, other, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_adm_reference_batches(tmp_path, data):
    ref, close, _ = data
    ext = featurenet_extractor(small_net(), cuda=False)
    direct = compute_generation_metrics(close, ref, ext)
    np.savez(tmp_path / "VIRTUAL_images.npz", arr_0=ref)
    assert compute_generation_metrics(close, tmp_path / "VIRTUAL_images.npz", ext) == direct
    # Statistics-only batch: FID / sFID as before, no reference features for P/R.
    feats = extract_features(ref, ext)
    mu, sigma = gaussian_statistics(feats["pooled"])
    mu_s, sigma_s = gaussian_statistics(feats["spatial"])
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    stats_only = compute_generation_metrics(close, str(tmp_path / "stats.npz"), ext)
    assert stats_only["FID"] == pytest.approx(direct["FID"], rel=1e-9)
    assert stats_only["sFID"] == pytest.approx(direct["sFID"], rel=1e-9)
    assert np.isnan(stats_only["Precision"]) and np.isnan(stats_only["Recall"])
    # Statistics of another feature network (Inception's 2048 / 2023 dims) are refused.
    np.savez(tmp_path / "inception.npz", mu=np.zeros(2048), sigma=np.eye(2048), mu_s=np.zeros(2023), sigma_s=np.eye(2023))
    with pytest.raises(UserError, match="another feature network"):
        compute_generation_metrics(close, tmp_path / "inception.npz", ext)
    with pytest.raises(UserError, match="not found"):
        compute_generation_metrics(close, tmp_path / "missing.npz", ext)
    np.savez(tmp_path / "junk.npz", foo=np.zeros(3))
    with pytest.raises(UserError, match="neither images"):
        compute_generation_metrics(close, tmp_path / "junk.npz", ext)


def test_frechet_to_reference_equals_torch_fidelitys_distance():
    """The fast replicate path against torch-fidelity's own Frechet distance, N < D and N > D."""
    from repro.metrics.fidelity import FrechetToReference

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20))
    mu_r, sigma_r = gaussian_statistics(torch.from_numpy(ref))
    fast = FrechetToReference(mu_r, sigma_r)
    for n in (8, 19, 200):
        x = rng.normal(0.5, 2.0, size=(n, 20))
        mu, sigma = gaussian_statistics(torch.from_numpy(x))
        assert fast(x) == pytest.approx(frechet_distance(mu, sigma, mu_r, sigma_r), rel=1e-6, abs=1e-6)


def test_generation_replicates_recompute_each_metric_on_resamples(data):
    """Point values as compute_generation_metrics; each replicate is the metric of a resample
    (checked here: the FID replicates against the independent numpy FID of resamples drawn
    with scipy's bootstrap's own generator), and the replicates spread."""
    from scipy import stats

    from repro.metrics.fidelity import generation_metrics_with_replicates

    ref, close, _ = data
    net = small_net()
    ex = featurenet_extractor(net, cuda=False)
    point, reps = generation_metrics_with_replicates(close[:30], ref, ex, n_resamples=40, seed=3)
    assert point == pytest.approx(compute_generation_metrics(close[:30], ref, ex))
    for k, r in reps.items():
        assert len(r) == 40 and np.all(np.isfinite(r)) and r.std() > 0, k
    to_x = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        g, r = net.embed(to_x(close[:30]))["pooled"].double().numpy(), net.embed(to_x(ref))["pooled"].double().numpy()
    seen = []
    stats.bootstrap((np.arange(30),), lambda idx: seen.append(np.asarray(idx)) or 0.0, n_resamples=40,
                    method="percentile", vectorized=False, random_state=np.random.default_rng(3))
    expected = [fid_numpy(g[idx], r) for idx in seen[-40:]]
    assert reps["FID"] == pytest.approx(np.array(expected), rel=1e-5)


def test_precision_recall_resampler_equals_torch_fidelity_on_each_resample():
    """The replicate path against torch-fidelity's P/R recomputed on the resampled features (repeats included)."""
    from repro.metrics.fidelity import PrecisionRecallResampler

    rng = np.random.default_rng(4)
    gen = torch.from_numpy(rng.normal(0.3, 1.0, (40, 6))).float()
    real = torch.from_numpy(rng.normal(0.0, 1.0, (70, 6))).float()
    fast = PrecisionRecallResampler(gen, real, k=3)
    for _ in range(10):
        idx = rng.integers(0, 40, 40)
        assert fast(idx) == pytest.approx(precision_recall(gen[torch.as_tensor(idx)], real, k=3), abs=1e-6)
    assert fast(np.arange(40)) == pytest.approx(precision_recall(gen, real, k=3), abs=1e-6)
