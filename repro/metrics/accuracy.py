"""Top-k classification accuracy: the one definition every classifier in the suite is scored by
(the embedded profile's feature network, ADM's noisy classifiers of Figure 6)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


@torch.no_grad()
def topk_accuracy(net: nn.Module, inputs: Sequence[Tensor], labels: Tensor, ks: Sequence[int] = (1, 5),
                  batch_size: int = 256) -> dict[str, float]:
    """{"top<k>": fraction of examples whose label is among the k largest logits} of
    `net(*inputs)` (e.g. `(x,)`, or `(x_t, t)` for a noisy classifier), in eval mode, batch by
    batch; k is capped at the number of classes. The net's train/eval mode is restored."""
    labels = torch.as_tensor(labels).reshape(-1, 1)
    n = len(labels)
    if n == 0 or any(len(x) != n for x in inputs):
        raise ValueError(f"need one label per example and at least one example, got {n} labels for "
                         f"inputs of length {[len(x) for x in inputs]}")
    was_training = net.training
    net.eval()
    hits = dict.fromkeys(ks, 0)
    for lo in range(0, n, batch_size):
        logits = net(*(x[lo:lo + batch_size] for x in inputs))
        top = logits.topk(min(max(ks), logits.shape[-1]), dim=-1).indices
        y = labels[lo:lo + batch_size].to(top.device)
        for k in ks:
            hits[k] += int((top[:, :k] == y).any(-1).sum())
    net.train(was_training)
    return {f"top{k}": hits[k] / n for k in ks}
