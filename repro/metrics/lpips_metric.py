"""LPIPS (Zhang et al., CVPR 2018) through the `lpips` package, for masked-image recovery (Table 1).

    d(x, y) = sum_l  mean_{h,w}  || w_l * (u_l(x)_{hw} - u_l(y)_{hw}) ||^2

where u_l is layer l of a trunk network with every spatial position's channel vector scaled
to unit length, and w_l a learned per-channel weight (the "lin" layers).

Two trunks, one code path (`lpips.LPIPS.forward`):
  * paper profile: AlexNet with the calibrated lin layers (`lpips_alexnet`), the paper's setting;
    the AlexNet ImageNet weights are read from a local torchvision state-dict file.
  * embedded profile: the FeatureNet trained on the embedded data (`lpips_from_feature_net`),
    with w_l = 1 (`lpips=False`), i.e. the package's uncalibrated "baseline" variant.
"""
from __future__ import annotations

import copy
import os
import warnings
from collections import namedtuple
from pathlib import Path

import lpips
import torch
import torch.nn as nn

from repro.errors import UserError
from repro.weights import WEIGHTS, check_weights
from repro.io import load_torch
from repro.metrics.feature_net import FeatureNet

ALEXNET_FILE = WEIGHTS["lpips_alexnet"].file
_STAGES = namedtuple("FeatureNetOutputs", ["relu1", "relu2", "relu3", "relu4", "relu5"])


class FeatureNetTrunk(nn.Module):
    """Adapter: a FeatureNet seen by lpips as a trunk like its AlexNet (5 named stage outputs)."""

    def __init__(self, net: FeatureNet):
        super().__init__()
        self.net = net
        self.N_slices = len(net.stages)

    def forward(self, x: torch.Tensor):
        return _STAGES(*self.net.features(x))


def _quiet_lpips(**kwargs) -> lpips.LPIPS:
    # torchvision warns about lpips' use of the deprecated `pretrained=` argument.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(verbose=False, **kwargs)


def lpips_from_feature_net(net: FeatureNet) -> lpips.LPIPS:
    """LPIPS with a FeatureNet trunk (embedded profile), frozen and in eval mode.

    Built as `lpips.LPIPS(pnet_rand=True, lpips=False)`: `pnet_rand` so that constructing the
    placeholder AlexNet downloads nothing, and `lpips=False` because the learned linear
    calibration (the per-channel w_l fitted to human 2AFC judgements) exists only for the
    AlexNet / VGG / SqueezeNet trunks; with a different trunk its channels mean nothing, so
    every channel gets weight 1. The placeholder trunk is then swapped for the FeatureNet's
    5 stages (`chns`, `L` updated).

    The scaling layer stays in the forward path but is set to the identity: lpips'
    ImageNet shift/scale would re-normalise inputs away from the [-1, 1] range the
    FeatureNet was trained on.
    """
    if len(net.stages) != 5:
        raise ValueError(f"lpips expects a 5-stage trunk, the FeatureNet has {len(net.stages)}")
    model = _quiet_lpips(net="alex", pretrained=False, lpips=False, pnet_rand=True)
    model.pnet_type = "repro-featurenet"
    model.net = FeatureNetTrunk(copy.deepcopy(net))
    model.chns = net.stage_channels
    model.L = len(model.chns)
    with torch.no_grad():
        model.scaling_layer.shift.zero_()
        model.scaling_layer.scale.fill_(1.0)
    return model.requires_grad_(False).eval()


def _alexnet_slice_key(model: lpips.LPIPS) -> dict[str, str]:
    """torchvision `features.N.<param>` -> lpips `sliceK.N.<param>` for every trunk parameter."""
    mapping = {}
    for k in range(1, model.net.N_slices + 1):
        for n, layer in getattr(model.net, f"slice{k}").named_children():
            for pname, _ in layer.named_parameters(recurse=False):
                mapping[f"features.{n}.{pname}"] = f"slice{k}.{n}.{pname}"
    return mapping


def lpips_alexnet(alexnet_weights: str | os.PathLike, version: str = "0.1") -> lpips.LPIPS:
    """The paper's LPIPS: AlexNet trunk + calibrated lin layers (`lpips.LPIPS(net="alex")`).

    The lin-layer weights ship inside the lpips package (lpips/weights/v<version>/alex.pth).
    The AlexNet trunk is read from `alexnet_weights`, a torchvision AlexNet state dict
    (alexnet-owt-7be5be79.pth), whose `features.N.*` tensors are loaded into lpips' slices.
    """
    path = check_weights("lpips_alexnet", alexnet_weights)
    lin_path = Path(lpips.__file__).parent / "weights" / f"v{version}" / "alex.pth"
    if not lin_path.is_file():
        raise UserError(f"LPIPS v{version} lin-layer weights {lin_path} missing from the lpips package; reinstall lpips")

    # The lin layers are read here (lpips' own loader would torch.load them itself), then
    # loaded strictly: every lin layer of the model must come from the file.
    lin_state = load_torch(lin_path, what="LPIPS lin-layer weights")
    model = _quiet_lpips(net="alex", version=version, pretrained=False, lpips=True, pnet_rand=True)
    lin_keys = {k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.")}   # lins aliases them
    if not isinstance(lin_state, dict) or set(lin_state) != lin_keys:
        raise UserError(f"{lin_path} does not hold lpips' AlexNet lin layers; reinstall lpips")
    model.load_state_dict(lin_state, strict=False)

    state = load_torch(path, what="LPIPS AlexNet weights")
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a torchvision AlexNet state dict; use {ALEXNET_FILE}")
    mapping = _alexnet_slice_key(model)
    missing = [k for k in mapping if k not in state]
    if missing:
        raise UserError(f"{path} is not a torchvision AlexNet state dict (missing {missing[0]}); use {ALEXNET_FILE}")
    model.net.load_state_dict({dst: state[src] for src, dst in mapping.items()}, strict=True)
    return model.requires_grad_(False).eval()


@torch.no_grad()
def lpips_distance(model: lpips.LPIPS, a: torch.Tensor, b: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Per-pair LPIPS distance [N] between image batches a, b of shape [N, 3, H, W] in [-1, 1]."""
    if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
        raise ValueError(f"expected two [N, 3, H, W] batches of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    device = next(model.parameters()).device
    out = [
        model(a[i : i + batch_size].to(device).float(), b[i : i + batch_size].to(device).float()).flatten().cpu()
        for i in range(0, len(a), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0)
