"""FeatureNet: the embedded profile's stand-in for AlexNet / Inception (repro.metrics.feature_net)."""
import numpy as np
import pytest
import torch

from repro.errors import UserError
from repro.metrics.feature_net import (
    SPATIAL_CHANNELS,
    FeatureNet,
    FeatureNetConfig,
    feature_net_accuracy,
    load_feature_net,
    save_feature_net,
    train_feature_net,
)


def colour_classes(n: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Three classes: noisy images whose dominant colour channel is the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 90, (n, size, size, 3))
    images[np.arange(n), :, :, labels] += 140
    return images.astype(np.uint8), labels


def test_view_shapes_at_native_and_other_sizes():
    torch.manual_seed(0)
    net = FeatureNet(FeatureNetConfig(num_classes=5)).eval()
    for size in (32, 16, 64):  # other sizes are resized to the native 32x32
        x = torch.rand(3, 3, size, size) * 2 - 1
        stages = net.features(x)
        assert [tuple(s.shape) for s in stages] == [
            (3, 16, 32, 32), (3, 32, 16, 16), (3, 64, 8, 8), (3, 128, 4, 4), (3, 256, 2, 2)
        ]
        assert net.pooled(x).shape == (3, 256)
        assert net.logits(x).shape == (3, 5)
        # sFID view: the first 7 channels of stage 3 (8x8), flattened channels-last.
        spatial = net.spatial(x)
        assert spatial.shape == (3, SPATIAL_CHANNELS * 8 * 8)
        torch.testing.assert_close(spatial, stages[2][:, :7].permute(0, 2, 3, 1).reshape(3, -1))
        torch.testing.assert_close(net.pooled(x), stages[-1].mean(dim=(2, 3)))


def test_training_is_deterministic_and_learns():
    images, labels = colour_classes(240, seed=0)
    kw = dict(steps=40, batch_size=32, lr=3e-3, progress=False, config=FeatureNetConfig(3, widths=(8, 8, 16, 16, 32)))
    net_a, stats_a = train_feature_net(images, labels, seed=1, **kw)
    net_b, stats_b = train_feature_net(images, labels, seed=1, **kw)
    net_c, _ = train_feature_net(images, labels, seed=2, **kw)
    sa, sb, sc = net_a.state_dict(), net_b.state_dict(), net_c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert stats_a == {**stats_b, "train_time_s": stats_a["train_time_s"]}
    # The colour classes are trivial: held-out accuracy must be high, and the stats must report it.
    test_images, test_labels = colour_classes(120, seed=5)
    assert feature_net_accuracy(net_a, test_images, test_labels) > 0.9
    assert stats_a["train_accuracy"] == feature_net_accuracy(net_a, images, labels, batch_size=512) > 0.9


def test_bad_inputs_raise_user_error():
    images, labels = colour_classes(10, seed=0)
    with pytest.raises(UserError):
        train_feature_net(images.astype(np.float32), labels, steps=1, progress=False)
    with pytest.raises(UserError):
        train_feature_net(images, labels[:5], steps=1, progress=False)


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(3)
    net = FeatureNet(FeatureNetConfig(num_classes=4, widths=(8, 8, 16, 16, 32), spatial_stage=4)).eval()
    path = save_feature_net(net, tmp_path / "sub" / "fnet.pt", stats={"train_accuracy": 0.5})
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temp file
    loaded = load_feature_net(path)
    assert loaded.config == net.config
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for k, v in net.embed(x).items():
        torch.testing.assert_close(loaded.embed(x)[k], v, rtol=0, atol=0)
    assert torch.load(path, weights_only=True)["stats"] == {"train_accuracy": 0.5}
    with pytest.raises(UserError, match="nothere.pt"):
        load_feature_net(tmp_path / "nothere.pt")
