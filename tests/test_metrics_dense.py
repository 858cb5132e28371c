"""DiffusionMTL's dense metrics on constructed inputs with hand-computed answers."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from repro.metrics.dense import (
    DepthMeter,
    EdgeMeter,
    NormalsMeter,
    SaliencyMeter,
    SegmentationMeter,
    delta_m,
    match_count,
    nyud_normals_valid,
    pascal_normals_valid,
)


def test_miou_pooled_over_images_ignoring_255_and_negative():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 0, FN 1 -> 0
    m = SegmentationMeter(3)
    m.update(pred, gt)
    assert m.score() == pytest.approx(100 / 3)
    split = SegmentationMeter(3)  # pooled: two halves give the same counts as the whole
    split.update(pred[:1], gt[:1])
    split.update(pred[1:], np.where(gt[1:] == 255, -1, gt[1:]))
    assert split.score() == pytest.approx(100 / 3)
    four = SegmentationMeter(4)  # a class in neither map counts as IoU 0 (the authors' mean over K)
    four.update(pred, gt)
    assert four.score() == pytest.approx(25.0)


# probabilities and GT: 2 positives, 2 negatives, and one ignored pixel
_PROB = np.array([0.80, 0.32, 0.72, 0.12, 0.99])
_SAL_GT = np.array([1, 1, 0, 0, 255])


def test_saliency_maxf_standard_by_hand():
    # thr 0.75..0.80: only 0.80 -> P 1, R 1/2 -> F = 1.3 * 0.5 / (0.3 + 0.5) = 0.8125
    m = SaliencyMeter(authors=False)
    m.update(_PROB, _SAL_GT)
    assert m.score() == pytest.approx(81.25)


def test_saliency_maxf_authors_sigmoid_quirk_by_hand():
    # sigmoid(0.80) = 0.690 < 0.70: the lone-top-pixel threshold never occurs; best is
    # thr 0.55 (sigmoids .690, .579, .673 >= .55; .530 not) -> P 2/3, R 1 -> 1.3*(2/3)/1.2
    m = SaliencyMeter()
    m.update(_PROB[:2], _SAL_GT[:2])
    m.update(_PROB[2:], _SAL_GT[2:])
    assert m.score() == pytest.approx(1.3 * (2 / 3) / 1.2 * 100)
    # thresholds >= 0.75 never fire under the sigmoid, whatever the probability
    m = SaliencyMeter(thresholds=np.array([0.75, 0.9]))
    m.update(np.ones(3), np.ones(3))
    assert m.score() == 0.0


def test_normals_mean_angle_by_hand():
    gt = np.zeros((3, 1, 4))
    gt[2] = 1.0                      # (0, 0, 1) everywhere
    gt[:, 0, 3] = 255                # ignored pixel (PASCAL)
    pred = np.array([[1, 0, 0, 5], [0, 1, 0, 5], [1, 0, -1, 5]], float)[:, None, :]
    # 45 deg, 90 deg, 180 deg (antiparallel: atan2 form stays exact), ignored
    m = NormalsMeter()
    m.update(2.0 * pred, gt, pascal_normals_valid(gt))  # scale does not matter: both normalised
    assert m.score() == pytest.approx((45 + 90 + 180) / 3)
    nyud_gt = np.where(gt == 255, 0, gt)
    np.testing.assert_array_equal(nyud_normals_valid(nyud_gt), [[True, True, True, False]])


def test_depth_abs_err_and_rmse_skip_zero_gt():
    m = DepthMeter()
    m.update(np.array([1.0, 2.0]), np.array([2.0, 2.0]))
    m.update(np.array([4.0, 9.0]), np.array([1.0, 0.0]))
    # errors -1, 0, 3 on the three valid pixels
    assert m.score() == pytest.approx({"absErr": 4 / 3, "rmse": math.sqrt(10 / 3)})


def test_odsf_small_edge_map_known_matches():
    H = W = 10
    gt = np.zeros((H, W), int)
    gt[2:9, 3] = 1                    # 7 GT edge pixels in column 3
    prob = np.zeros((H, W))
    prob[2:7, 4] = 0.9                # 5 pixels one column over: distance 1, all matched
    prob[0, 9] = 0.6                  # far away: unmatched
    prob[4, 5] = 0.3                  # distance 2 from column 3 > 1.5: unmatched
    radius_frac = 1.5 / math.hypot(H, W)
    m = EdgeMeter(max_dist=radius_frac, thresholds=np.array([0.2, 0.5, 0.8]))
    m.update(prob, gt)
    np.testing.assert_array_equal(m.matched, [5, 5, 5])
    np.testing.assert_array_equal(m.pred_count, [7, 6, 5])
    # thr 0.8: P = 1, R = 5/7 -> F = 10/12 (thr 0.5: 50/65, thr 0.2: 5/7)
    assert m.score() == pytest.approx(100 * 10 / 12)


def test_odsf_tolerance_bound_and_one_to_one():
    gt = np.zeros((10, 10), int)
    gt[5, 5] = 1
    prob = np.zeros((10, 10))
    prob[6, 6] = 1.0                                  # diagonal neighbour: sqrt(2) away
    at_bound = math.sqrt(2) / math.hypot(10, 10)      # radius exactly sqrt(2): matched (bound included)
    inside, outside = EdgeMeter(at_bound, [0.5]), EdgeMeter(at_bound * 0.99, [0.5])
    inside.update(prob, gt)
    outside.update(prob, gt)
    assert inside.score() == pytest.approx(100.0) and outside.score() == 0.0
    prob[4, 5] = 1.0                                  # a second candidate for the same GT pixel
    both = EdgeMeter(at_bound, [0.5])
    both.update(prob, gt)
    assert both.matched[0] == 1                       # one-to-one: P = 1/2, R = 1 -> F = 2/3
    assert both.score() == pytest.approx(100 * 2 / 3)
    gt[0, 0] = 255                                    # unannotated pixels are out of the evaluation
    prob[0, 0] = 1.0
    again = EdgeMeter(at_bound, [0.5])
    again.update(prob, gt)
    assert again.pred_count[0] == 2


def test_match_count_is_maximum_not_greedy_and_agrees_with_brute_force():
    # pred (0,1) can take either GT pixel; (0,-1) only (0,0): the maximum matching pairs both
    assert match_count(np.array([[0, 1], [0, -1]]), np.array([[0, 0], [0, 2]]), 1.0) == 2
    rng = np.random.default_rng(0)

    def brute(a, b, r):  # try every injective assignment of a's points to b's or to nothing
        best = 0
        for perm in itertools.permutations(list(range(len(b))) + [None] * len(a), len(a)):
            pairs = [(i, j) for i, j in enumerate(perm) if j is not None]
            if all(np.hypot(*(a[i] - b[j])) <= r for i, j in pairs):
                best = max(best, len(pairs))
        return best

    for _ in range(30):
        a, b = rng.integers(0, 4, (rng.integers(0, 5), 2)), rng.integers(0, 4, (rng.integers(0, 4), 2))
        r = float(rng.choice([1.0, math.sqrt(2), 2.0]))
        assert match_count(a, b, r) == brute(a, b, r)


def test_delta_m_reproduces_paper_table3():
    names = ["semseg_mIoU", "human_parts_mIoU", "saliency_maxF", "normals_mErr", "boundary_odsF"]
    single = dict(zip(names, [50.34, 59.05, 77.43, 16.59, 64.40]))
    feature = dict(zip(names, [57.78, 58.98, 77.82, 16.11, 64.50]))
    # by hand: (.147795 - .001185 + .005037 + .028933 + .001553) / 5 * 100
    assert delta_m(feature, single) == pytest.approx(3.6426, abs=1e-3)
    assert delta_m(feature, single) == pytest.approx(3.65, abs=0.02)  # as printed
    baseline = dict(zip(names, [49.71, 56.00, 74.50, 16.85, 62.80]))
    assert delta_m(baseline, single) == pytest.approx(-2.85, abs=0.02)
    nyud = ["semseg_mIoU", "depth_absErr", "normals_mErr"]
    assert delta_m(dict(zip(nyud, [43.92, 0.5138, 26.44])), dict(zip(nyud, [45.28, 0.4802, 25.93]))) == \
        pytest.approx(-3.99, abs=0.01)
    assert delta_m(single, single) == 0.0
    with pytest.raises(ValueError, match="lack"):
        delta_m({"semseg_mIoU": 1.0}, single)
