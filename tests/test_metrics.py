import math

import numpy as np
import pytest
import torch

from helpers import metrics


def brute_force_cm(pred, target, num_classes, ignore_index=255):
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(pred.ravel(), target.ravel(), strict=True):
        if t != ignore_index:
            cm[t, p] += 1
    return cm


def test_confusion_matrix_matches_brute_force_and_skips_ignore():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, size=(3, 17, 23))
    target[:, :4] = 255
    pred = rng.integers(0, 5, size=(3, 17, 23))
    cm = metrics.confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 5)
    assert cm.dtype == torch.int64
    np.testing.assert_array_equal(cm.numpy(), brute_force_cm(pred, target, 5))
    assert cm.sum() == (target != 255).sum()


def test_per_image_matrices_sum_to_dataset_matrix():
    rng = np.random.default_rng(1)
    target = torch.from_numpy(rng.integers(0, 4, size=(5, 9, 11)))
    target[0, 0] = 255
    pred = torch.from_numpy(rng.integers(0, 4, size=(5, 9, 11)))
    stack = metrics.per_image_confusion_matrices(pred, target, 4)
    assert stack.shape == (5, 4, 4)
    for i in range(5):
        np.testing.assert_array_equal(stack[i], metrics.confusion_matrix(pred[i], target[i], 4))
    np.testing.assert_array_equal(stack.sum(0), metrics.confusion_matrix(pred, target, 4))


def test_summarize_on_a_hand_computed_matrix():
    # rows = truth, columns = prediction; class 2 absent from both
    cm = torch.tensor([[8, 2, 0], [1, 9, 0], [0, 0, 0]])
    result = metrics.summarize(cm, ["a", "b", "c"])
    assert result["iou"][0] == pytest.approx(8 / 11)
    assert result["iou"][1] == pytest.approx(9 / 12)
    assert math.isnan(result["iou"][2])
    assert result["miou"] == pytest.approx((8 / 11 + 9 / 12) / 2)
    assert result["pixel_accuracy"] == pytest.approx(17 / 20)
    assert result["mean_class_accuracy"] == pytest.approx((0.8 + 0.9) / 2)
    assert result["dice"] == pytest.approx((16 / 19 + 18 / 21) / 2)
    assert result["iou_by_class"]["b"] == pytest.approx(0.75)


def test_per_image_mean_differs_from_dataset_miou():
    # Image 1: large class 0, perfect. Image 2: a tiny class-1 object, missed.
    target = torch.zeros(2, 10, 10, dtype=torch.long)
    pred = torch.zeros(2, 10, 10, dtype=torch.long)
    target[1, :1, :2] = 1
    stack = metrics.per_image_confusion_matrices(pred, target, 2)
    dataset = metrics.summarize(stack.sum(0))["miou"]
    per_image = metrics.per_image_mean_iou(stack)
    assert dataset == pytest.approx((198 / 200 + 0) / 2)
    assert per_image == pytest.approx((1.0 + (98 / 100 + 0) / 2) / 2)
    assert per_image > dataset + 0.2


def test_integer_id_dice_depends_on_class_numbering_but_dice_does_not():
    rng = np.random.default_rng(2)
    target = rng.choice(4, size=(4, 16, 16), p=[0.6, 0.2, 0.15, 0.05])
    noise = rng.integers(0, 4, size=target.shape)
    pred = torch.from_numpy(np.where(rng.random(target.shape) < 0.7, target, noise))
    target = torch.from_numpy(target)
    renumber = torch.tensor([3, 2, 1, 0])  # the same labels under other ids
    num, den = metrics.integer_id_dice(pred, target)
    num2, den2 = metrics.integer_id_dice(renumber[pred], renumber[target])
    assert abs(float(num / den) - float(num2 / den2)) > 0.05
    dice = metrics.summarize(metrics.confusion_matrix(pred, target, 4))["dice"]
    dice2 = metrics.summarize(metrics.confusion_matrix(renumber[pred], renumber[target], 4))["dice"]
    assert dice == pytest.approx(dice2)


def test_confusion_matrix_accumulator_equals_one_matrix_over_the_whole_set():
    generator = torch.Generator().manual_seed(1)
    pred = torch.randint(0, 4, (6, 12, 16), generator=generator)
    target = torch.randint(0, 4, (6, 12, 16), generator=generator)
    target[:, :2] = metrics.IGNORE_INDEX
    accumulator = metrics.ConfusionMatrix(4)
    for start in range(0, 6, 4):  # batches of 4 and 2
        accumulator.update(pred[start:start + 4], target[start:start + 4])
    accumulator.reduce_from_all_processes()  # no distributed run: unchanged
    whole = metrics.confusion_matrix(pred, target, 4)
    torch.testing.assert_close(accumulator.matrix, whole)
    assert int(accumulator.matrix.sum()) == 6 * 10 * 16  # the ignored rows are not counted
    assert accumulator.compute() == metrics.summarize(whole)
