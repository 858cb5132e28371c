"""LPIPS through the lpips package: FeatureNet trunk (embedded) and AlexNet loader (paper)."""
from pathlib import Path

import lpips
import pytest
import torch
import torchvision

from repro.errors import UserError
from repro.metrics.feature_net import FeatureNet, FeatureNetConfig
from repro.metrics.lpips_metric import ALEXNET_FILE, lpips_alexnet, lpips_distance, lpips_from_feature_net


def hand_lpips(stages_a, stages_b, weights=None) -> torch.Tensor:
    """LPIPS by its definition: unit-normalise channels per position, squared difference,
    (weighted) channel sum, spatial mean, sum over layers."""
    total = 0.0
    for l, (fa, fb) in enumerate(zip(stages_a, stages_b)):
        ua = fa / (fa.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        ub = fb / (fb.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        d = (ua - ub) ** 2
        if weights is not None:
            d = d * weights[l].view(1, -1, 1, 1)
        total = total + d.sum(dim=1).mean(dim=(1, 2))
    return total


@pytest.fixture(scope="module")
def feature_net():
    torch.manual_seed(0)
    return FeatureNet(FeatureNetConfig(num_classes=3, widths=(8, 12, 16, 16, 24))).eval()


@pytest.fixture(scope="module")
def model(feature_net):
    return lpips_from_feature_net(feature_net)


def images(n, seed, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_adapter_matches_hand_computation(model, feature_net):
    a, b = images(3, 1), images(3, 2)
    expected = hand_lpips(feature_net.features(a), feature_net.features(b))
    got = lpips_distance(model, a, b, batch_size=2)
    assert got.shape == (3,)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert model.L == 5 and model.chns == [8, 12, 16, 16, 24]
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_identical_images_give_zero_and_distance_is_symmetric(model):
    a, b = images(4, 3), images(4, 4)
    assert torch.all(lpips_distance(model, a, a) == 0)
    torch.testing.assert_close(lpips_distance(model, a, b), lpips_distance(model, b, a), rtol=1e-6, atol=0)
    assert torch.all(lpips_distance(model, a, b) > 0)


def test_distance_grows_with_perturbation(model):
    x = images(8, 5) * 0.8
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(6))
    d = [lpips_distance(model, x, (x + eps * noise).clamp(-1, 1)).mean().item() for eps in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(d0 < d1 for d0, d1 in zip(d, d[1:])), d


def test_adapter_does_not_touch_the_callers_network(feature_net):
    before = {k: v.clone() for k, v in feature_net.state_dict().items()}
    m = lpips_from_feature_net(feature_net)
    with torch.no_grad():
        next(m.net.parameters()).add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in feature_net.state_dict().items())


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(7)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / ALEXNET_FILE
    torch.save(state, path)
    return path, state


def test_alexnet_loader_maps_torchvision_weights_onto_lpips_slices(alexnet_file):
    path, state = alexnet_file
    model = lpips_alexnet(path)
    trunk = model.net.state_dict()
    # torchvision conv layers 0, 3, 6, 8, 10 live in lpips' slices 1..5 under their own index.
    expected = {"slice1.0": "features.0", "slice2.3": "features.3", "slice3.6": "features.6",
                "slice4.8": "features.8", "slice5.10": "features.10"}
    assert sorted(trunk) == sorted(f"{k}.{p}" for k in expected for p in ("weight", "bias"))
    for dst, src in expected.items():
        for p in ("weight", "bias"):
            assert torch.equal(trunk[f"{dst}.{p}"], state[f"{src}.{p}"])
    # The calibrated lin layers shipped with lpips are loaded too.
    lin = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu", weights_only=True)
    own = model.state_dict()
    assert lin and all(torch.equal(own[k], v) for k, v in lin.items())


def test_alexnet_lpips_matches_hand_computation_on_torchvision_trunk(alexnet_file):
    """Independent oracle: torchvision's AlexNet features + lpips' lin weights by hand."""
    path, state = alexnet_file
    model = lpips_alexnet(path)
    tv = torchvision.models.alexnet(weights=None).eval()
    tv.load_state_dict(state)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    cuts = [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)]  # up to each ReLU: relu1..relu5

    def stages(x):
        h, out = (x - shift) / scale, []
        for lo, hi in cuts:
            for layer in tv.features[lo:hi]:
                h = layer(h)
            out.append(h.clone())
        return out

    lin = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu", weights_only=True)
    weights = [lin[f"lin{l}.model.1.weight"].flatten() for l in range(5)]
    a, b = images(2, 8, size=64), images(2, 9, size=64)
    with torch.no_grad():
        expected = hand_lpips(stages(a), stages(b), weights)
    torch.testing.assert_close(lpips_distance(model, a, b), expected, rtol=1e-5, atol=1e-7)


def test_alexnet_missing_or_wrong_file(tmp_path):
    with pytest.raises(UserError, match=ALEXNET_FILE) as err:
        lpips_alexnet(tmp_path / ALEXNET_FILE)
    assert "~/.cache/torch/hub/checkpoints" in str(err.value)
    bogus = tmp_path / "not-alexnet.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bogus)
    with pytest.raises(UserError, match="not a torchvision AlexNet"):
        lpips_alexnet(bogus)
