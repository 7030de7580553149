import math

import cv2
import numpy as np
import pytest
import torch

from helpers import boundary, data

VOID = 255


def scene(height=60, width=80, edge=40):
    """Two classes split by a vertical edge, a third class as a box, a void band on top."""
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[:, edge:] = 1
    labels[30:45, 10:25] = 2
    labels[:5] = VOID
    return labels


def test_default_tolerance_is_three_quarters_of_a_percent_of_the_diagonal():
    assert boundary.default_tolerance(360, 480) == pytest.approx(4.5)


def test_boundary_map_marks_both_sides_and_ignores_edges_with_void():
    labels = np.array([[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [VOID, VOID, 1, 1]])
    expected = np.array([[0, 1, 1, 0],
                         [0, 1, 1, 0],
                         [0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary.boundary_map(labels), expected)


def test_dilation_matches_an_exact_distance_transform():
    rng = np.random.default_rng(0)
    for tolerance in (1.0, 2.5, 4.5, 7.3):
        mask = rng.random((70, 90)) < 0.01
        distance = cv2.distanceTransform(np.where(mask, 0, 1).astype(np.uint8), cv2.DIST_L2,
                                         cv2.DIST_MASK_PRECISE)
        reach = boundary.within_tolerance(mask, boundary.tolerance_kernel(tolerance))
        np.testing.assert_array_equal(reach, distance <= tolerance)


def test_perfect_prediction_scores_one():
    labels = scene()
    assert boundary.image_boundary_f1(labels, labels, 3) == 1.0
    precision, recall, f1 = boundary.f1_from_counts(boundary.boundary_counts(labels, labels, 3))
    np.testing.assert_array_equal(f1, [1.0, 1.0, 1.0])


def test_shift_within_the_tolerance_scores_one_and_beyond_it_scores_less():
    truth = scene(edge=40)
    near = scene(edge=43)
    far = scene(edge=50)
    assert boundary.image_boundary_f1(near, truth, 3, tolerance=4.5) == 1.0
    shifted = boundary.image_boundary_f1(far, truth, 3, tolerance=4.5)
    assert shifted < 0.8
    # The box did not move: its class keeps F1 = 1. Class 1 has only the moved edge (F1 0);
    # class 0 has the moved edge and the box outline, so it keeps part of its score.
    _, _, f1 = boundary.f1_from_counts(boundary.boundary_counts(far, truth, 3, tolerance=4.5))
    assert f1[1] == 0.0 and f1[2] == 1.0 and 0.0 < f1[0] < 1.0
    # A wider tolerance forgives the same shift.
    assert boundary.image_boundary_f1(far, truth, 3, tolerance=10.5) == 1.0


def test_void_pixels_are_excluded():
    truth = scene()
    pred = truth.copy()
    pred[:5] = np.arange(80)[None, :] % 3  # anything at all where the truth is void
    assert boundary.image_boundary_f1(pred, truth, 3) == 1.0


def test_missing_class_scores_zero_and_absent_class_is_not_scored():
    truth = scene()
    pred = truth.copy()
    pred[pred == 2] = 0  # the box is missed
    _, recall, f1 = boundary.f1_from_counts(boundary.boundary_counts(pred, truth, 4))
    assert f1[2] == 0.0 and recall[2] == 0.0
    assert math.isnan(f1[3])  # class 3 appears nowhere: not scored
    assert boundary.image_boundary_f1(pred, truth, 4) < 1.0


def test_accumulator_averages_images_and_takes_torch_batches():
    truth = scene()
    far = scene(edge=50)
    score = boundary.BoundaryScore(3, tolerance=4.5)
    score.update(torch.from_numpy(np.stack([truth, far])), torch.from_numpy(np.stack([truth, truth])))
    summary = score.summary()
    assert summary["images"] == 2
    expected = (1.0 + boundary.image_boundary_f1(far, truth, 3, tolerance=4.5)) / 2
    assert summary["bf"] == pytest.approx(expected)
    assert summary["bf_per_class"][2] == 1.0
    assert 0 < summary["precision"] < 1 and 0 < summary["recall"] < 1


def test_on_a_camvid_mask(camvid_dir):
    _, mask_path = data.camvid_pairs(camvid_dir, "test")[0]
    truth = data.read_mask(mask_path, data.CAMVID_CLASSES)
    assert boundary.image_boundary_f1(truth, truth, 11) == 1.0
    assert boundary.image_boundary_f1(np.roll(truth, 2, axis=1), truth, 11) > 0.9
    assert boundary.image_boundary_f1(np.roll(truth, 12, axis=1), truth, 11) < 0.5
