"""Top-k accuracy (repro.metrics.accuracy), the one accuracy of the suite, on hand-made logits."""
import pytest
import torch
from torch import nn

from repro.metrics import topk_accuracy


class Table(nn.Module):
    """A 'classifier' that returns fixed logits for example i (its input is i), and records
    the mode it was called in and the extra inputs it got."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits, self.modes, self.extras = logits, [], []

    def forward(self, i: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        self.extras.extend(extra)
        return self.logits[i]


def test_hand_computed_top1_top5_across_batches():
    # 6 classes, 4 examples. Ranks of the true label: 1st, 3rd, 6th (last), 5th.
    logits = torch.tensor([[9., 1, 2, 3, 4, 5],    # label 0: top-1
                           [1., 6, 5, 4, 3, 2],    # label 3: 3rd largest
                           [6., 5, 4, 3, 2, 1],    # label 5: smallest
                           [1., 2, 3, 4, 5, 6]])   # label 1: 5th largest
    labels = torch.tensor([0, 3, 5, 1])
    net = Table(logits).train()
    i = torch.arange(4)
    for batch_size in (1, 3, 256):
        acc = topk_accuracy(net, (i,), labels, ks=(1, 3, 5), batch_size=batch_size)
        assert acc == {"top1": 1 / 4, "top3": 2 / 4, "top5": 3 / 4}
    assert net.training and not any(net.modes)   # scored in eval mode, mode restored


def test_k_capped_at_the_number_of_classes_and_extra_inputs_passed():
    logits = torch.tensor([[0., 1.], [1., 0.], [0., 1.]])
    t = torch.tensor([7, 8, 9])
    net = Table(logits)
    assert topk_accuracy(net, (torch.arange(3), t), torch.tensor([1, 1, 0]), batch_size=2) == {"top1": 1 / 3, "top5": 1.0}
    assert torch.equal(torch.cat(net.extras), t)


def test_needs_one_label_per_example():
    with pytest.raises(ValueError, match="one label per example"):
        topk_accuracy(Table(torch.zeros(3, 2)), (torch.arange(3),), torch.tensor([0, 1]))
