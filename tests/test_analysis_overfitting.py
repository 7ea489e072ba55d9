import numpy as np
import pandas as pd
import pytest

from analysis.overfitting import (
    generalization_loss,
    overfit_onset,
    overfitting_table,
    training_progress,
)

EPOCHS = np.arange(1, 61)


def test_generalization_loss_is_percent_above_running_minimum():
    gl = generalization_loss(np.array([1.0, 0.5, 0.55, 0.4, 0.6]))
    assert gl == pytest.approx([0.0, 0.0, 10.0, 0.0, 50.0])


def test_training_progress_over_strips_of_k():
    p = training_progress(np.array([4.0, 3.0, 2.0, 1.0, 1.0, 1.0]), k=3)
    assert np.isnan(p[:2]).all()
    assert p[2:] == pytest.approx([1000 * (3 / 2 - 1), 1000 * (2 / 1 - 1), 1000 * (4 / 3 - 1), 0])


@pytest.mark.parametrize("minimum", [15, 30, 45])
def test_overfitting_found_after_planted_validation_minimum(minimum):
    rng = np.random.default_rng(minimum)
    train = 0.8 * np.exp(-EPOCHS / 15) + 0.05
    val = 0.3 + 0.0004 * (EPOCHS - minimum) ** 2 + rng.normal(0, 0.001, len(EPOCHS))
    onset = overfit_onset(train, val)
    assert onset is not None
    assert minimum < EPOCHS[onset] <= minimum + 8
    # noiseless: GL > 5 % first when 0.0004 d² > 0.015, d = 7
    assert EPOCHS[overfit_onset(train, 0.3 + 0.0004 * (EPOCHS - minimum) ** 2)] == minimum + 7


def test_no_overfitting_while_validation_loss_keeps_falling():
    rng = np.random.default_rng(0)
    train = 0.8 * np.exp(-EPOCHS / 15) + 0.05
    val = 0.9 * np.exp(-EPOCHS / 20) + 0.2 + rng.normal(0, 0.001, len(EPOCHS))
    assert overfit_onset(train, val) is None


def test_divergence_of_both_losses_is_not_overfitting():
    loss = np.concatenate([np.linspace(1.0, 0.3, 30), np.linspace(0.3, 2.0, 30)])
    assert overfit_onset(loss + 0.1, loss) is None


def test_overfitting_table_columns_and_values():
    train = 0.8 * np.exp(-EPOCHS / 15) + 0.05
    val = 0.3 + 0.0004 * (EPOCHS - 20) ** 2
    val_iou = 0.7 - 0.0002 * (EPOCHS - 20) ** 2
    curves = pd.DataFrame(
        {
            "cell_id": "c0",
            "seed": 0,
            "image_size": 64,
            "dataset_size": 100,
            "epochs": 60,
            "batch_size": 8,
            "epoch": EPOCHS,
            "train_loss": train,
            "val_loss": val,
            "train_iou": 0.9,
            "val_iou": val_iou,
        }
    )
    row = overfitting_table(curves).iloc[0]
    assert row["val_min_epoch"] == 20
    assert row["overfit_epoch"] == 27
    assert row["gl_max"] == pytest.approx(100 * (0.3 + 0.0004 * 40**2) / 0.3 - 100)
    assert row["train_val_iou_gap"] == pytest.approx(0.9 - val_iou[-1])
    assert row["best_minus_last"] == pytest.approx(0.7 - val_iou[-1])
    assert row["progress_final"] == pytest.approx(training_progress(train)[-1])
