"""Table 4's segmentation scores against a confusion matrix worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from repro.metrics.segmentation import confusion_matrix, segmentation_scores

# 4 classes; class 3 never occurs in the ground truth; two pixels carry the ignore label.
TARGET = np.array([[0, 0, 0, 1],
                   [1, 1, 2, 2],
                   [255, 255, 2, 0]])
PRED = np.array([[0, 0, 1, 1],
                 [1, 3, 2, 0],
                 [3, 3, 2, 0]])


def test_confusion_matrix_by_hand():
    # ground truth 0 at 4 pixels: predicted 0, 0, 1, 0      -> row [3, 1, 0, 0]
    # ground truth 1 at 3 pixels: predicted 1, 1, 3         -> row [0, 2, 0, 1]
    # ground truth 2 at 3 pixels: predicted 2, 0, 2         -> row [1, 0, 2, 0]
    # the two ignored pixels (predicted 3) are not counted
    expected = np.array([[3, 1, 0, 0],
                         [0, 2, 0, 1],
                         [1, 0, 2, 0],
                         [0, 0, 0, 0]])
    np.testing.assert_array_equal(confusion_matrix(PRED, TARGET, 4), expected)


def test_scores_by_hand_with_an_ignored_label_and_an_absent_class():
    s = segmentation_scores(confusion_matrix(PRED, TARGET, 4))
    assert s["per_pixel_acc"] == pytest.approx(7 / 10)
    # class 3 has no ground truth: no accuracy, left out of the mean
    assert s["per_class_acc"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    # IoU: 0 -> 3 / (4 + 4 - 3); 1 -> 2 / (3 + 3 - 2); 2 -> 2 / (3 + 2 - 2);
    # class 3 was predicted once but never occurs: IoU 0, counted (a false positive)
    assert s["class_IoU"] == pytest.approx((3 / 5 + 2 / 4 + 2 / 3 + 0) / 4)


def test_a_class_absent_from_both_maps_is_left_out():
    target = np.array([0, 0, 1, 1])
    s = segmentation_scores(confusion_matrix(np.array([0, 1, 1, 1]), target, 5))
    assert s["class_IoU"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert s["per_class_acc"] == pytest.approx((1 / 2 + 1) / 2)


def test_perfect_prediction_scores_one_and_out_of_range_ids_are_rejected():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 6, size=(3, 8, 8))
    assert segmentation_scores(confusion_matrix(target, target, 6)) == pytest.approx(
        {"per_pixel_acc": 1.0, "per_class_acc": 1.0, "class_IoU": 1.0})
    with pytest.raises(ValueError, match="prediction"):
        confusion_matrix(np.full(4, 7), np.zeros(4, int), 6)
    with pytest.raises(ValueError, match="target"):
        confusion_matrix(np.zeros(4, int), np.full(4, 6), 6)
