"""Joint image-representation generation (Appendix E.4).

z_0 is the image; the one extra modality x is its representation r, a vector: the CLIP
image embedding in the paper profile, the embedded feature network's pooled embedding in
the embedded profiles (centred by the training-set mean and scaled to norm sqrt(D), so
that every coordinate is of order one for the squared-error head loss).

Encoder (Figure 3, option 3): the U-Net itself through cross-attention, under
stop-gradient: e = eps_theta(0, t = 0; context = r), an image-shaped encoding that enters
the forward aggregation (eq. 3-4). The cross-attention layers are trained because the
noise network also reads r as its cross-attention context (eps_theta(z_t, X, t), the
X form of MT-Diffusion with X entering through cross-attention rather than on channels);
without that they would only ever run under stop-gradient and keep their initial weights.
Decoder (option b): a 2-layer MLP (hidden width, ReLU, D) on the pooled middle-block output.

Joint generation is Algorithm 1 with nothing known: r starts from N(0, I) and is
re-estimated by the head at every step.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from repro.data.pixels import to_uint8
from repro.data.registry import load_images
from repro.diffusion import Modality, MTProcess, algorithm1
from repro.errors import UserError
from repro.nn import MTDiffusionModel, PooledMLPHead
from repro.tasks.backbone import build_unet
from repro.tasks.base import Task, register

VARIANTS = ("mt",)
MODALITY = "representation"
CENTRING_IMAGES = 2048      # training images whose mean embedding centres the representation
# OpenAI CLIP's input normalisation (224x224, per-channel mean / std of its training images)
CLIP_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalise(f: Tensor) -> Tensor:
    """Scale to norm sqrt(D): unit RMS per coordinate, direction unchanged (cosine-invariant)."""
    return F.normalize(f, dim=1) * f.shape[1] ** 0.5


def load_embedder(cfg: Mapping[str, Any], deps: Mapping[str, Any]) -> tuple[Callable[[Tensor], Tensor], str]:
    """The representation of images in [-1, 1]: (images -> [B, D], a caption name).

    Embedded profiles: the feature network of the `features` job (its pooled stage-5
    embedding, centred by its mean over the first training images that job saw).
    Paper profile: a CLIP image encoder saved with TorchScript (`weights.clip` /
    `task.clip`; OpenAI's released CLIP `.pt` files are TorchScript archives).
    """
    if "features" in deps:
        from repro.metrics import load_feature_net

        net = load_feature_net(deps["features"] / "feature_net.pt").eval()
        data = json.loads((deps["features"] / "job.json").read_text())["config"]["data"]
        train = load_images(data, "train")
        with torch.no_grad():
            images = train.images(np.arange(min(CENTRING_IMAGES, len(train))))
            mean = torch.cat([net.pooled(images[i:i + 256]) for i in range(0, len(images), 256)]).mean(0)
        return (lambda x: normalise(net.pooled(x) - mean)), "FeatureNet pooled embedding (trained here), centred"
    path = Path(str(cfg.get("weights", {}).get("clip") or cfg.get("task", {}).get("clip") or "")).expanduser()
    return clip_embedder(path), f"CLIP image embedding ({path.name})"


def clip_embedder(path: Path) -> Callable[[Tensor], Tensor]:
    from repro.weights import check_weights

    path = check_weights("clip", path)
    model = torch.jit.load(str(path), map_location="cpu").eval()
    encode = model.encode_image if hasattr(model, "encode_image") else model
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def embed(x: Tensor) -> Tensor:
        x = F.interpolate((x + 1) / 2, size=(CLIP_SIZE, CLIP_SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
        return normalise(encode((x - mean) / std).float())
    return embed


class ImagesWithRepresentations:
    """Training split whose `images(idx)` gives {"image": [B, 3, H, W], "rep": [B, D]}."""

    def __init__(self, images, embed: Callable[[Tensor], Tensor]):
        self._images, self._embed, self.labels = images, embed, images.labels

    def __len__(self) -> int:
        return len(self._images)

    def images(self, index) -> dict[str, Tensor]:
        x = self._images.images(index)
        with torch.no_grad():
            return {"image": x, "rep": self._embed(x)}


class _JointNetwork:
    """Algorithm 1's network call with r also fed to cross-attention.

    The shared sampler hands the network only the encodings e; this wrapper is also the
    modality's encoder, so it sees the estimate of r encoded at this step and passes the
    same estimate as the context of the network call that follows.
    """

    def __init__(self, task: "RepresentationTask", model: MTDiffusionModel):
        self.task, self.model, self.current = task, model, None

    def encode(self, r: Tensor) -> Tensor:
        self.current = r
        return self.task.encode(self.model, r)

    def __call__(self, z: Tensor, t: Tensor, e):
        return self.model(z, t, e, context=self.current)


@register
class RepresentationTask(Task):
    """How a batch becomes (z_0, X), which network models it, how the joint samples are drawn."""

    name = "representation"
    variants = VARIANTS
    samples_kind = "joint"
    kinds = {MODALITY: "continuous"}

    def __init__(self, resolution: int, rep_dim: int, hidden: int):
        self.resolution, self.rep_dim, self.hidden = resolution, rep_dim, hidden

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "RepresentationTask":
        t = cfg["task"]
        return cls(cfg["data"]["resolution"], t["rep_dim"], t["hidden"])

    # --- training -----------------------------------------------------------------------

    def training_data(self, cfg: Mapping[str, Any], deps: Mapping[str, Any]) -> ImagesWithRepresentations:
        embed, _ = load_embedder(cfg, deps)
        data = load_images(cfg["data"], "train")
        with torch.no_grad():
            dim = embed(data.images(np.arange(1))).shape[1]
        if dim != self.rep_dim:
            raise UserError(f"the representation has {dim} dimensions but task.rep_dim is {self.rep_dim}: set task.rep_dim={dim}")
        return ImagesWithRepresentations(data, embed)

    def batch(self, d: Mapping[str, Tensor], labels: Tensor, generator: torch.Generator
              ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """(z_0, X, extra network inputs) = (image, {representation: r}, {context: r})."""
        return d["image"], {MODALITY: d["rep"]}, {"context": d["rep"]}

    @torch.no_grad()
    def encode(self, model: MTDiffusionModel, r: Tensor) -> Tensor:
        """E(r) = eps_theta(0, t = 0; context = r): `model`'s U-Net as the encoder, under stop-gradient."""
        backbone = model.backbone
        zeros = torch.zeros(len(r), backbone.in_channels, self.resolution, self.resolution, dtype=r.dtype)
        return backbone(zeros, torch.zeros(len(r), dtype=torch.long), context=r)

    def encoders(self, model: MTDiffusionModel, variant: str) -> dict[str, Callable[[Tensor], Tensor]]:
        return {MODALITY: functools.partial(self.encode, model)}

    def n_modalities(self, variant: str) -> int:
        return 1

    def build_model(self, unet_cfg: Mapping[str, Any], variant: str) -> MTDiffusionModel:
        self.check_variant(variant)
        backbone = build_unet(unet_cfg, self.resolution, encoder_channels=self.rep_dim)
        head = PooledMLPHead(backbone.middle_channels, self.hidden, self.rep_dim)
        return MTDiffusionModel(backbone, {MODALITY: (head, "middle")})

    # --- Appendix E.4 -------------------------------------------------------------------

    def sample(self, cfg: Mapping[str, Any], model: MTDiffusionModel | None, process: MTProcess | None,
               part: str = "all", batches=None) -> dict[str, np.ndarray]:
        """`eval.n_images` (image, representation) pairs drawn jointly: images (uint8), representations."""
        row, ev, smp = cfg["row"], cfg["eval"], cfg["sample"]
        if model is None:
            raise UserError(f"row {row['name']!r} names no model: joint generation needs one")
        n, g = ev["n_images"], torch.Generator().manual_seed(cfg["seed"] * 7919 + 5)
        images, reps = [], []
        chunks = range(0, n, smp["batch_size"])
        for lo in tqdm(chunks, desc=row["name"], dynamic_ncols=True, disable=len(chunks) < 2):
            b = min(smp["batch_size"], n - lo)
            joint = _JointNetwork(self, model)
            # Algorithm 1, line 3: the unknown representation starts from random data.
            r0 = torch.randn(b, self.rep_dim, generator=g)
            z, x = algorithm1(joint, process, (b, 3, self.resolution, self.resolution),
                              [Modality(MODALITY, joint.encode, init=r0)], prior=cfg["diffusion"]["prior"],
                              generator=g, clip_denoised=smp["clip_denoised"])
            images.append(z.clamp(-1, 1))
            reps.append(x[MODALITY])
        return {"images": to_uint8(torch.cat(images)), "representations": torch.cat(reps).numpy().astype(np.float32)}

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any]) -> None:
        check_config(cfg)


def check_config(cfg: Mapping[str, Any]) -> None:
    """Fail before any job starts: the CLIP encoder of the paper profile must exist."""
    if cfg["features"]["kind"] == "pretrained":
        from repro.weights import check_weights

        check_weights("clip", cfg["weights"].get("clip"))
    elif cfg["features"]["kind"] != "embedded":
        raise UserError(f"the representation experiment needs features.kind embedded or pretrained, "
                        f"got {cfg['features']['kind']!r}")
