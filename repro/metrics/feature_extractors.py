"""torch-fidelity feature extractors that also give the sFID spatial features.

The ADM evaluation suite (Dhariwal & Nichol, 2021), which the paper uses for IS / FID /
sFID / Precision / Recall (Appendix E), reads three tensors from one Inception-v3 pass:

    logits           softmax input                                   -> IS
    pool_3 (2048)    global-average-pooled last block                -> FID, Precision/Recall
    mixed_6/conv     first 1x1-conv branch of the 4th 17x17 block;   -> sFID
                     its first 7 channels, flattened: 7*17*17 = 2023 dims

Both extractors below are registered with torch-fidelity, so `torch_fidelity.calculate_metrics`
can use them by name, and both provide all of these under the same feature names, so one
pass over an image set yields every number (see `repro.metrics.fidelity`):

    "repro-inception-v3-spatial"  torch-fidelity's inception-v3-compat (paper profile),
                                  + "spatial" = Mixed_6d.branch1x1 (TF's mixed_6/conv)
    "repro-featurenet"            the FeatureNet trained on the embedded data (embedded profile)
"""
from __future__ import annotations

import hashlib
import os

from unittest import mock

import torch
import torch_fidelity
import torch_fidelity.feature_extractor_inceptionv3 as _tf_inception
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from repro.weights import WEIGHTS, check_weights
from repro.errors import UserError
from repro.io import load_torch
from repro.metrics.feature_net import SPATIAL_CHANNELS, FeatureNet, load_feature_net

INCEPTION_FILE = WEIGHTS["inception"].file
INCEPTION_NAME = "repro-inception-v3-spatial"
FEATURENET_NAME = "repro-featurenet"
SPATIAL = "spatial"


def module_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's class, parameter and buffer names, shapes, dtypes and values."""
    h = hashlib.sha256(type(module).__name__.encode())
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _Fingerprinted:
    """Mixin: a stable identity for reference-statistics cache keys (name + weights)."""

    def fingerprint(self) -> str:
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = f"{self.get_name()}-{module_fingerprint(self)}"
        return self._fingerprint


class InceptionSpatialExtractor(_Fingerprinted, FeatureExtractorInceptionV3):
    """torch-fidelity's inception-v3-compat plus the ADM sFID features, from a local weights file.

    `feature_extractor_weights_path` must point at torch-fidelity's converted TF Inception
    weights; nothing is downloaded (torch-fidelity's own default is to fetch them).
    """

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None, **kwargs):
        path = check_weights("inception", feature_extractor_weights_path)
        state = load_torch(path, what="Inception weights")
        if not isinstance(state, dict) or "fc.weight" not in state:
            raise UserError(f"{path} is not torch-fidelity's Inception-v3 state dict ({INCEPTION_FILE})")
        # torch-fidelity unpickles a weights path with torch.load unrestricted, which runs
        # whatever a crafted file asks; give it the state dict read above instead, through the
        # only other way its constructor takes weights (its download function, never called).
        try:
            with mock.patch.object(_tf_inception, "load_state_dict_from_url", lambda *a, **k: state):
                super().__init__(name, features_list, feature_extractor_weights_path=None, **kwargs)
        except RuntimeError as err:     # load_state_dict(strict=True): names or shapes do not match
            raise UserError(f"{path} is not torch-fidelity's Inception-v3 state dict ({INCEPTION_FILE}): "
                            f"{str(err).splitlines()[0]}") from None
        self._spatial: torch.Tensor | None = None
        # TF's mixed_6/conv:0 is the ReLU output of Mixed_6d's 1x1 branch (torch-fidelity's
        # weight converter maps mixed_6/conv -> Mixed_6d.branch1x1).
        self.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module, inputs, output):
        # NCHW -> NHWC before flattening, to match the layout of ADM's TF tensors.
        self._spatial = output[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1).float()

    @staticmethod
    def get_provided_features_list():
        return FeatureExtractorInceptionV3.get_provided_features_list() + (SPATIAL,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        if metric == "sfid":
            return SPATIAL
        return FeatureExtractorInceptionV3.get_default_feature_layer_for_metric(metric)

    @staticmethod
    def can_be_compiled():
        return False

    def forward(self, x):
        requested = self.features_list
        # The parent walks its own feature list; ask it for the rest ("768" lies after
        # Mixed_6d, so the hook fires even when only "spatial" is requested).
        inner = [f for f in requested if f != SPATIAL] or ["768"]
        self.features_list = inner
        try:
            out = dict(zip(inner, super().forward(x)))
        finally:
            self.features_list = requested
        out[SPATIAL], self._spatial = self._spatial, None
        return tuple(out[f] for f in requested)


class FeatureNetExtractor(_Fingerprinted, FeatureExtractorBase):
    """The embedded profile's FeatureNet as a torch-fidelity feature extractor.

    Features: "logits" (IS), "pooled" (FID, Precision/Recall, KID), "spatial" (sFID).
    Weights come from `feature_extractor_weights_path` (a `save_feature_net` checkpoint), which
    is how `torch_fidelity.calculate_metrics(feature_extractor="repro-featurenet", ...)` builds
    it, or directly from an in-memory `feature_net`.
    """

    def __init__(
        self,
        name: str,
        features_list: list[str],
        feature_extractor_weights_path: str | os.PathLike | None = None,
        feature_net: FeatureNet | None = None,
        **kwargs,
    ):
        super().__init__(name, features_list)
        if (feature_net is None) == (feature_extractor_weights_path is None):
            raise ValueError("give exactly one of feature_extractor_weights_path and feature_net")
        net = feature_net if feature_net is not None else load_feature_net(feature_extractor_weights_path)
        self.net = net
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return "logits", "pooled", SPATIAL

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "pooled", "kid": "pooled", "prc": "pooled", "sfid": SPATIAL}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return (torch.rand([1, 3, 32, 32]) * 255).to(torch.uint8)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expected uint8 images [N, 3, H, W], got {getattr(x, 'dtype', type(x))} {tuple(x.shape)}")
        views = self.net.embed(x.float() / 127.5 - 1.0)  # bytes -> [-1, 1], the FeatureNet's input space
        return tuple(views[f].float() for f in self.features_list)


def _register(name: str, cls: type) -> None:
    if name not in FEATURE_EXTRACTORS_REGISTRY:  # idempotent under re-import
        torch_fidelity.register_feature_extractor(name, cls)


_register(INCEPTION_NAME, InceptionSpatialExtractor)
_register(FEATURENET_NAME, FeatureNetExtractor)

ALL_FEATURES = {INCEPTION_NAME: ["logits_unbiased", "2048", SPATIAL], FEATURENET_NAME: ["logits", "pooled", SPATIAL]}


def inception_extractor(weights_path: str | os.PathLike | None, cuda: bool | None = None) -> InceptionSpatialExtractor:
    """The paper-profile extractor with every feature the five generation metrics need."""
    ext = InceptionSpatialExtractor(INCEPTION_NAME, ALL_FEATURES[INCEPTION_NAME], feature_extractor_weights_path=weights_path)
    return _place(ext, cuda)


def featurenet_extractor(net_or_checkpoint: FeatureNet | str | os.PathLike, cuda: bool | None = None) -> FeatureNetExtractor:
    """The embedded-profile extractor (from a FeatureNet or its checkpoint path)."""
    if isinstance(net_or_checkpoint, FeatureNet):
        ext = FeatureNetExtractor(FEATURENET_NAME, ALL_FEATURES[FEATURENET_NAME], feature_net=net_or_checkpoint)
    else:
        ext = FeatureNetExtractor(
            FEATURENET_NAME, ALL_FEATURES[FEATURENET_NAME], feature_extractor_weights_path=net_or_checkpoint
        )
    return _place(ext, cuda)


def _place(ext: torch.nn.Module, cuda: bool | None):
    if cuda is None:
        cuda = torch.cuda.is_available()
    return ext.cuda() if cuda else ext
