"""Confusion-matrix metrics against counts and ratios worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from gridrun.metrics import confusion_matrix, constant_scores, predict_labels, scores


def test_confusion_matrix_counts_true_rows_and_predicted_columns() -> None:
    target = torch.tensor([[[0, 0, 1], [1, 1, 0]]])
    pred = torch.tensor([[[0, 1, 1], [1, 0, 0]]])
    # t0: p0 at (0,0),(1,2); p1 at (0,1)  |  t1: p1 at (0,2),(1,0); p0 at (1,1)
    expected = torch.tensor([[2, 1], [1, 2]])
    cm = confusion_matrix(pred, target, 2)
    assert cm.dtype == torch.int64
    assert torch.equal(cm, expected)


def test_confusion_matrix_three_classes_with_an_unused_label() -> None:
    target = torch.tensor([0, 1, 2, 2, 2, 1])
    pred = torch.tensor([0, 2, 2, 2, 1, 1])
    expected = torch.zeros(4, 4, dtype=torch.int64)
    expected[0, 0] = 1
    expected[1, 2] = 1
    expected[1, 1] = 1
    expected[2, 2] = 2
    expected[2, 1] = 1
    assert torch.equal(confusion_matrix(pred, target, 4), expected)


def test_predict_labels_binary_threshold_and_multiclass_argmax() -> None:
    binary = torch.tensor([[[[-0.1, 0.0, 2.0]]]])  # (1, 1, 1, 3)
    assert predict_labels(binary).tolist() == [[[0, 0, 1]]]
    multi = torch.tensor([[[[1.0, 0.0]], [[0.0, 3.0]], [[2.0, 1.0]]]])  # (1, 3, 1, 2)
    assert predict_labels(multi).tolist() == [[[2, 1]]]


def test_binary_scores_are_the_foreground_class() -> None:
    cm = torch.tensor([[50, 10], [5, 35]])  # rows: truth; columns: prediction
    s = scores(cm)
    # foreground: tp 35, fp 10, fn 5; background: tp 50, fp 5, fn 10
    assert s["iou"] == pytest.approx(35 / 50)
    assert s["dice"] == pytest.approx(70 / 85)
    assert s["precision"] == pytest.approx(35 / 45)
    assert s["recall"] == pytest.approx(35 / 40)
    assert s["pixel_acc"] == pytest.approx(85 / 100)
    assert s["miou"] == pytest.approx((35 / 50 + 50 / 65) / 2)
    # each class's own IoU: c0 background, c1 foreground (the headline iou)
    assert s["iou_c0"] == pytest.approx(50 / 65)
    assert s["iou_c1"] == s["iou"]


def test_all_foreground_prediction_scores_high_iou_but_half_miou() -> None:
    # the membrane trap: predicting "all interior" on 78% interior pixels
    cm = torch.tensor([[0, 22], [0, 78]])
    s = scores(cm)
    assert s["iou"] == pytest.approx(0.78)
    assert s["miou"] == pytest.approx(0.39)
    assert s["recall"] == pytest.approx(1.0)
    assert s["iou_c0"] == 0.0


def test_prefix_is_prepended_to_every_key() -> None:
    s = scores(torch.tensor([[3, 1], [1, 3]]), "val_")
    assert set(s) == {
        "val_iou",
        "val_dice",
        "val_precision",
        "val_recall",
        "val_pixel_acc",
        "val_miou",
        "val_iou_c0",
        "val_iou_c1",
    }


def test_multiclass_scores_are_means_over_classes() -> None:
    cm = torch.tensor([[4, 1, 0], [2, 6, 2], [0, 0, 5]])
    s = scores(cm)
    iou = [4 / (4 + 2 + 1), 6 / (6 + 1 + 4), 5 / (5 + 2 + 0)]
    dice = [8 / (8 + 2 + 1), 12 / (12 + 1 + 4), 10 / (10 + 2 + 0)]
    precision = [4 / 6, 6 / 7, 5 / 7]
    recall = [4 / 5, 6 / 10, 5 / 5]
    assert [s[f"iou_c{k}"] for k in range(3)] == pytest.approx(iou)
    assert s["iou"] == pytest.approx(sum(iou) / 3)
    assert s["dice"] == pytest.approx(sum(dice) / 3)
    assert s["precision"] == pytest.approx(sum(precision) / 3)
    assert s["recall"] == pytest.approx(sum(recall) / 3)
    assert s["pixel_acc"] == pytest.approx(15 / 20)
    assert "miou" not in s


def test_a_class_absent_everywhere_is_nan_and_left_out_of_the_mean() -> None:
    cm = torch.tensor([[3, 1, 0], [1, 3, 0], [0, 0, 0]])
    s = scores(cm)
    assert math.isnan(s["iou_c2"])
    assert s["iou"] == pytest.approx(3 / 5)


def test_summed_counts_equal_the_whole_batch_but_averaged_ious_do_not() -> None:
    # an uneven split, as when one worker gets a smaller share of a batch
    target_a, pred_a = torch.tensor([1]), torch.tensor([1])  # IoU 1
    target_b, pred_b = torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 1, 0])  # IoU 1/3
    whole = confusion_matrix(torch.cat([pred_a, pred_b]), torch.cat([target_a, target_b]), 2)
    cm_a, cm_b = confusion_matrix(pred_a, target_a, 2), confusion_matrix(pred_b, target_b, 2)
    assert torch.equal(cm_a + cm_b, whole)
    assert scores(whole)["iou"] == pytest.approx(0.5)  # tp 2, fp 1, fn 1
    averaged = (scores(cm_a)["iou"] + scores(cm_b)["iou"]) / 2
    assert averaged == pytest.approx(2 / 3)
    assert averaged != pytest.approx(scores(whole)["iou"])


def test_summed_counts_of_random_halves_equal_the_whole() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (5, 7, 9), generator=g)
    pred = torch.randint(0, 3, (5, 7, 9), generator=g)
    halves = confusion_matrix(pred[:2], target[:2], 3) + confusion_matrix(pred[2:], target[2:], 3)
    assert torch.equal(halves, confusion_matrix(pred, target, 3))
    assert int(halves.sum()) == 5 * 7 * 9


def test_ignored_pixels_are_not_counted() -> None:
    target = torch.tensor([[[0, 1, 255], [2, 255, 1]]])
    pred = torch.tensor([[[0, 2, 1], [2, 0, 1]]])
    expected = torch.zeros(3, 3, dtype=torch.int64)
    expected[0, 0] = 1  # (0, 0)
    expected[1, 2] = 1  # (0, 1)
    expected[2, 2] = 1  # (1, 0)
    expected[1, 1] = 1  # (1, 2); (0, 2) and (1, 1) are ignored whatever was predicted
    cm = confusion_matrix(pred, target, 3, ignore_index=255)
    assert torch.equal(cm, expected)
    other = pred.clone()
    other[0, 0, 2], other[0, 1, 1] = 2, 2
    assert torch.equal(confusion_matrix(other, target, 3, ignore_index=255), expected)
    s = scores(cm)
    assert s["pixel_acc"] == pytest.approx(3 / 4)
    assert [s[f"iou_c{k}"] for k in range(3)] == pytest.approx([1.0, 1 / 2, 1 / 2])


def test_binary_ignored_pixels_leave_the_foreground_scores() -> None:
    target = torch.tensor([1, 1, 0, 255, 255])
    pred = torch.tensor([1, 0, 0, 1, 1])
    cm = confusion_matrix(pred, target, 2, ignore_index=255)
    assert cm.tolist() == [[1, 0], [1, 1]]
    # counted as background, the two ignored pixels would be false positives: IoU 1/4
    assert scores(cm)["iou"] == pytest.approx(1 / 2)


def test_constant_scores_are_the_scores_of_a_model_predicting_one_label() -> None:
    target = torch.tensor([[0, 0, 1, 1, 1], [2, 2, 2, 2, 255]])
    for label in range(3):
        pred = torch.full_like(target, label)
        cm = confusion_matrix(pred, target, 3, ignore_index=255)
        # the truth's pixels per class, the ignored one left out
        assert constant_scores([2, 3, 4], label, "val_") == scores(cm, "val_")


def test_all_background_and_all_foreground_hand_values() -> None:
    # 22 background pixels, 78 foreground
    background, foreground = constant_scores([22, 78], 0), constant_scores([22, 78], 1)
    assert background["iou"] == 0.0 and background["iou_c0"] == pytest.approx(0.22)
    assert background["miou"] == pytest.approx(0.11)
    assert math.isnan(background["precision"])  # nothing predicted foreground
    assert foreground["iou"] == pytest.approx(0.78) and foreground["miou"] == pytest.approx(0.39)
    assert foreground["pixel_acc"] == pytest.approx(0.78)
