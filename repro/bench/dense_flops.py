"""FLOPs of DiffusionMTL's networks (repro/nn/diffusionmtl.py) per image, for the dry run's prices.

Counted like the diffusion networks' (repro.bench.measure.count_flops: torch's FlopCounterMode,
matmuls, convolutions and attention, forward and backward) at batch 1, on the meta device (no
memory, no weights: the ImageNet file is not read, FLOPs do not depend on it). What a training
step costs depends on the labels an image has: the denoiser runs, and the loss back-propagates,
only for its labelled tasks (design 3). So a training image is counted with one task labelled
(the mean over the tasks: the one-label setting exactly) and with every task labelled, and the
cost of `m` labels per image is interpolated linearly between the two (each further label adds
one task's denoiser and loss). Inference (dense_predict) runs every task: one forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

NYUD_SIZE = (288, 384)   # MTPSL's pre-processed NYUv2 (height x width); data.resolution holds the height


@dataclass(frozen=True)
class DenseFlops:
    train_one: float      # fwd+bwd FLOPs of one image with one labelled task (mean over the tasks)
    train_all: float      # ... with every task labelled
    forward: float        # inference FLOPs of one image (every task)
    params: int
    tasks: int

    def train(self, labels: float | None) -> float:
        """fwd+bwd FLOPs of one image with `labels` labelled tasks on average (None: all)."""
        if labels is None or self.tasks == 1:
            return self.train_all if labels is None else self.train_one
        return self.train_one + (labels - 1) * (self.train_all - self.train_one) / (self.tasks - 1)


def image_size(data: Mapping[str, Any]) -> tuple[int, int]:
    """The network's input size: NYUD-v2 keeps MTPSL's 288 x 384, the others are square at data.resolution."""
    return NYUD_SIZE if data["name"] == "nyud_v2" else (int(data["resolution"]),) * 2


def count_dense(config: Mapping[str, Any]) -> DenseFlops:
    """FLOPs of the network of dense_train config `config` (module docstring)."""
    import torch

    from repro.bench.measure import count_flops
    from repro.data.registry import dense_tasks
    from repro.nn.dense_losses import labelled_rows
    from repro.tasks.dense import DiffusionMTLTask

    t = config["task"]
    task = DiffusionMTLTask(dense_tasks(config["data"]), t["backbone"], int(t["width"]), int(t["S"]),
                            float(t["token_scale"]), None, t["loss_weights"])
    with torch.device("meta"):
        model = task.build_model(config["model"]["variant"])
    names = tuple(task.tasks)
    image = torch.zeros(1, 3, *image_size(config["data"]), device="meta")

    def step(labelled: list[bool]) -> None:
        """The loss's graph: every final output of a labelled task and its preliminary prediction."""
        out = model(image, labelled_rows(torch.tensor([labelled]), names))
        parts = [y.float().sum() for y in out.final.values()]
        parts += [out.preliminary[n].float().sum() for n, on in zip(names, labelled) if on and n in out.preliminary]
        sum(parts).backward()

    def infer() -> None:
        with torch.no_grad():
            model(image, None)

    one = [count_flops(lambda i=i: step([j == i for j in range(len(names))])) for i in range(len(names))]
    return DenseFlops(sum(one) / len(one), float(count_flops(lambda: step([True] * len(names)))),
                      float(count_flops(infer)), sum(p.numel() for p in model.parameters()), len(names))


def mean_labels(data: Mapping[str, Any]) -> float | None:
    """Labelled tasks per training image of `data.setting`: 1 for one-label (its definition); for
    random labels the mean of the authors' mapping file when it is on disk, else None (unknown)."""
    from pathlib import Path

    if data.get("setting") == "one_label":
        return 1.0
    if data["name"] not in ("pascal_context", "nyud_v2") or not data.get("mapping_dir"):
        return None
    from repro.data.dense_folders import mapping_paths
    from repro.data.partial_labels import load_nyud_mapping, load_pascal_mapping

    path = mapping_paths(data)[0]
    if not Path(path).is_file():
        return None
    if data["name"] == "pascal_context":
        rows = list(load_pascal_mapping(path).values())
        return sum(float(r.sum()) for r in rows) / len(rows)
    return float(load_nyud_mapping(path).sum(1).mean())
