import numpy as np
import pandas as pd
import pytest

from analysis.overfitting import (
    generalization_loss,
    overfit_onset,
    overfitting_table,
    training_progress,
)
from analysis.params import Params

EPOCHS = np.arange(1, 61)
TRAIN = 0.8 * np.exp(-EPOCHS / 15) + 0.05


def _bump(at: int, height: float = 0.1, width: float = 1.5) -> np.ndarray:
    return height * np.exp(-(((EPOCHS - at) / width) ** 2))


def test_generalization_loss_is_percent_above_running_minimum():
    gl = generalization_loss(np.array([1.0, 0.5, 0.55, 0.4, 0.6]))
    assert gl == pytest.approx([0.0, 0.0, 10.0, 0.0, 50.0])


def test_training_progress_over_strips_of_k():
    p = training_progress(np.array([4.0, 3.0, 2.0, 1.0, 1.0, 1.0]), k=3)
    assert np.isnan(p[:2]).all()
    assert p[2:] == pytest.approx([1000 * (3 / 2 - 1), 1000 * (2 / 1 - 1), 1000 * (4 / 3 - 1), 0])


@pytest.mark.parametrize("minimum", [15, 30, 45])
def test_overfitting_found_a_few_epochs_after_the_validation_minimum(minimum):
    rng = np.random.default_rng(minimum)
    val = 0.3 + 0.0004 * (EPOCHS - minimum) ** 2 + rng.normal(0, 0.001, len(EPOCHS))
    onset = overfit_onset(TRAIN, val)
    assert minimum < EPOCHS[onset.index] <= minimum + 8
    assert onset.transient_rises == 0
    # noiseless: GL > 5 % first when 0.0004 d² > 0.015, d = 7
    clean = overfit_onset(TRAIN, 0.3 + 0.0004 * (EPOCHS - minimum) ** 2)
    assert EPOCHS[clean.index] == minimum + 7


@pytest.mark.parametrize("at", [10, 25, 40])
def test_transient_bump_is_not_an_onset_and_is_counted(at):
    # the loss jumps > 10 % above its minimum for a few epochs, then falls below it again
    val = 0.9 * np.exp(-EPOCHS / 20) + 0.2 + _bump(at, height=0.25)
    assert generalization_loss(val).max() > 10
    onset = overfit_onset(TRAIN, val)
    assert onset.index is None
    assert onset.transient_rises == 1


def test_transient_bumps_before_true_overfitting_leave_its_onset_alone():
    val = 0.3 + 0.0004 * (EPOCHS - 40) ** 2 + _bump(12, 0.15) + _bump(24, 0.15)
    onset = overfit_onset(TRAIN, val)
    assert onset.transient_rises == 2
    assert EPOCHS[onset.index] == 47


def test_a_rise_that_later_returns_below_its_minimum_is_transient():
    # overfits from epoch 20 to 35, then a second descent sets a new minimum at epoch 50
    val = np.where(EPOCHS <= 35, 0.3 + 0.0004 * (EPOCHS - 20) ** 2, 0.39 - 0.0075 * (EPOCHS - 35))
    val = np.where(EPOCHS <= 50, val, 0.2775 + 0.002 * (EPOCHS - 50))
    onset = overfit_onset(TRAIN, val)
    assert onset.transient_rises == 1
    # from the new minimum: GL = 100 · 0.002 k / 0.2775 > 5 first at k = 7
    assert EPOCHS[onset.index] == 57


def test_no_overfitting_while_validation_loss_keeps_falling():
    rng = np.random.default_rng(0)
    val = 0.9 * np.exp(-EPOCHS / 20) + 0.2 + rng.normal(0, 0.001, len(EPOCHS))
    assert overfit_onset(TRAIN, val).index is None


def test_divergence_of_both_losses_is_not_overfitting():
    loss = np.concatenate([np.linspace(1.0, 0.3, 30), np.linspace(0.3, 2.0, 30)])
    assert overfit_onset(loss + 0.1, loss).index is None


def test_threshold_comes_from_params():
    val = 0.3 + 0.0004 * (EPOCHS - 20) ** 2
    # GL > 20 % first when 0.0004 d² > 0.06, d = 13
    assert EPOCHS[overfit_onset(TRAIN, val, Params(gl_alpha=20)).index] == 33
    assert "more than 20% above that minimum" in Params(gl_alpha=20).onset_rule()


def test_overfitting_table_columns_and_values():
    val = 0.3 + 0.0004 * (EPOCHS - 20) ** 2 + _bump(8, 0.3)
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
            "train_loss": TRAIN,
            "val_loss": val,
            "train_iou": 0.9,
            "val_iou": val_iou,
        }
    )
    row = overfitting_table(curves).iloc[0]
    assert row["val_min_epoch"] == 20
    assert row["overfit_epoch"] == 27
    assert row["transient_rises"] == 1
    assert row["gl_max"] == pytest.approx(generalization_loss(val).max())
    assert row["train_val_gap"] == pytest.approx(0.9 - val_iou[-1])
    assert row["best_minus_last"] == pytest.approx(0.7 - val_iou[-1])
    assert row["progress_final"] == pytest.approx(training_progress(TRAIN)[-1])


def _falling_then_jump(jump_at: int) -> np.ndarray:
    """Validation loss falling to ``jump_at − 1``, then 20 % above its minimum."""
    val = 1.0 - 0.01 * EPOCHS
    val[jump_at - 1 :] = 1.2 * val[jump_at - 2]
    return val


@pytest.mark.parametrize("jump_at", [59, 60])
def test_an_onset_at_the_last_epoch_or_the_one_before_is_unconfirmed(jump_at):
    onset = overfit_onset(TRAIN, _falling_then_jump(jump_at))
    assert EPOCHS[onset.index] == jump_at
    assert not onset.confirmed


def test_a_sustained_rise_is_confirmed_and_one_that_falls_back_is_not():
    assert overfit_onset(TRAIN, 0.3 + 0.0004 * (EPOCHS - 20) ** 2).confirmed
    # 10 % above the minimum for three epochs, then back to within 0.5 % of it for good
    val = np.where(EPOCHS <= 30, 0.6 - 0.01 * EPOCHS, 0.3015)
    val[30:33] = 0.33
    onset = overfit_onset(TRAIN, val)
    assert EPOCHS[onset.index] == 31
    assert not onset.confirmed
    # one epoch short of onset_confirm later epochs: unconfirmed; enough: confirmed
    assert not overfit_onset(TRAIN, _falling_then_jump(58), Params(onset_confirm=3)).confirmed
    assert overfit_onset(TRAIN, _falling_then_jump(58), Params(onset_confirm=2)).confirmed
    assert "fewer than 3 epochs after it" in Params().onset_rule()


def _trials_of_run(val: np.ndarray, trial_epochs: tuple[int, ...]) -> pd.DataFrame:
    return pd.concat(
        pd.DataFrame(
            {
                "cell_id": f"img64_n12_ep{n}_bs2",
                "seed": 0,
                "image_size": 64,
                "dataset_size": 12,
                "epochs": n,
                "batch_size": 2,
                "training_run": f"img64_n12_ep{max(trial_epochs)}_bs2_s0",
                "epoch": EPOCHS[:n],
                "train_loss": TRAIN[:n],
                "val_loss": val[:n],
                "val_iou": 0.5,
            }
        )
        for n in trial_epochs
    )


def _by_epochs(curves: pd.DataFrame) -> pd.DataFrame:
    return overfitting_table(curves).set_index("epochs").sort_index()


def test_trials_read_the_runs_confirmed_onset_at_their_own_epoch():
    table = _by_epochs(_trials_of_run(0.3 + 0.0004 * (EPOCHS - 20) ** 2, (20, 30, 60)))
    assert table["run_overfit_epoch"].tolist() == [27, 27, 27]
    assert pd.isna(table.loc[20, "overfit_epoch"])
    assert table.loc[30, "overfit_epoch"] == 27 and table.loc[60, "overfit_epoch"] == 27
    assert table["unconfirmed_onset_epoch"].isna().all()
    assert table["trial_epoch"].tolist() == [20, 30, 60]
    # at each trial's own epochs: the 20-epoch trial is still at its minimum
    assert table["val_min_epoch"].tolist() == [20, 20, 20]
    assert table.loc[20, "gl_final"] == pytest.approx(0.0)
    assert table.loc[30, "gl_final"] == pytest.approx(100 * 0.04 / 0.3)


def test_an_unconfirmed_onset_is_reported_apart_and_only_by_trials_that_reach_it():
    table = _by_epochs(_trials_of_run(_falling_then_jump(59), (30, 60)))
    assert table["overfit_epoch"].isna().all()
    assert table["run_overfit_epoch"].isna().all()
    assert pd.isna(table.loc[30, "unconfirmed_onset_epoch"])
    assert table.loc[60, "unconfirmed_onset_epoch"] == 59


def test_a_rise_the_run_recovers_from_is_transient_for_the_trial_that_ends_in_it():
    # the run overfits from 20 to 35, then sets a new minimum at 50: the 35-epoch trial's
    # own curve rises after its minimum, but the run says the rise was transient
    val = np.where(EPOCHS <= 35, 0.3 + 0.0004 * (EPOCHS - 20) ** 2, 0.39 - 0.0075 * (EPOCHS - 35))
    val = np.where(EPOCHS <= 50, val, 0.2775)
    table = _by_epochs(_trials_of_run(val, (35, 60)))
    assert overfit_onset(TRAIN[:35], val[:35]).index is not None
    assert table["overfit_epoch"].isna().all() and table["unconfirmed_onset_epoch"].isna().all()
    assert table["transient_rises"].tolist() == [1, 1]
