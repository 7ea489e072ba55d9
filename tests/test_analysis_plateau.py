import numpy as np
import pandas as pd
import pytest

from analysis.params import Params
from analysis.plateau import detect_plateau, plateau_table, smooth_centred

EPOCHS = np.arange(1, 81)
MIN_DELTA = Params().min_delta


def _rise_then_flat(corner: int, slope: float) -> np.ndarray:
    return 0.2 + slope * np.minimum(EPOCHS, corner)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("corner", [10, 20, 45])
@pytest.mark.parametrize("slope", [0.01, 0.03])
def test_plateau_found_at_the_corner_without_smoothing_lag(corner, slope, seed):
    rng = np.random.default_rng(seed)
    values = _rise_then_flat(corner, slope) + rng.normal(0, 0.001, len(EPOCHS))
    res = detect_plateau(values)
    assert abs(EPOCHS[res.index] - corner) <= 1
    assert res.value == pytest.approx(0.2 + slope * corner, abs=0.003)
    assert res.gain_after == pytest.approx(0.0, abs=0.003)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("corner", [10, 20, 45])
@pytest.mark.parametrize("slope", [0.004, 0.01, 0.03])
def test_noisy_flat_plateaus_where_it_became_flat(corner, slope, seed):
    # every epoch jitters, but by less than min_delta from lowest to highest
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-0.45 * MIN_DELTA, 0.45 * MIN_DELTA, len(EPOCHS))
    res = detect_plateau(_rise_then_flat(corner, slope) + noise)
    assert abs(EPOCHS[res.index] - corner) <= 2


def test_epochs_a_bit_above_the_best_do_not_restart_the_count():
    values = _rise_then_flat(20, 0.02)
    # isolated epochs above the plateau by more than min_delta: an EarlyStopping scan
    # would take each as a new best and put the plateau at the last of them
    values[[24, 31, 38]] += 1.5 * MIN_DELTA
    assert EPOCHS[detect_plateau(values).index] == 20
    # one epoch far above it (a lucky validation batch) changes nothing either
    values[50] += 0.2
    assert EPOCHS[detect_plateau(values).index] == 20


def test_saturating_noisy_curve_plateaus_where_gains_fall_below_min_delta():
    rng = np.random.default_rng(1)
    values = 0.9 - 0.7 * np.exp(-EPOCHS / 8) + rng.normal(0, 0.003, len(EPOCHS))
    res = detect_plateau(values)
    # noiseless: the gain over the next 5 epochs is 0.325·exp(−t/8) < 0.005 from t ≈ 33
    assert 28 <= EPOCHS[res.index] <= 38


@pytest.mark.parametrize("seed", range(5))
def test_rising_curve_has_no_plateau(seed):
    rng = np.random.default_rng(seed)
    values = 0.1 + 0.008 * EPOCHS + rng.normal(0, 0.002, len(EPOCHS))
    assert detect_plateau(values).index is None


def test_plateau_in_last_epochs_is_not_yet_a_plateau():
    values = np.minimum(EPOCHS, 77) * 0.01
    assert detect_plateau(values).index is None
    assert EPOCHS[detect_plateau(values, Params(patience=3)).index] == 77


def test_a_stall_that_training_breaks_out_of_is_not_the_plateau():
    stall_then_rise = np.where(EPOCHS < 30, 0.5, 0.5 + 0.01 * (np.minimum(EPOCHS, 60) - 30))
    res = detect_plateau(stall_then_rise)
    assert EPOCHS[res.index] == 60
    assert res.value == pytest.approx(0.8)
    still_rising_after_stall = np.where(EPOCHS < 30, 0.5, 0.5 + 0.01 * (EPOCHS - 30))
    assert detect_plateau(still_rising_after_stall).index is None


def test_gain_after_plateau_shows_what_stopping_there_gives_up():
    falls_back = 0.8 - 0.002 * np.clip(EPOCHS - 20, 0, None)
    res = detect_plateau(falls_back)
    assert EPOCHS[res.index] == 1
    assert res.gain_after == pytest.approx(-0.12, abs=0.003)


def test_loss_curves_plateau_when_they_stop_falling():
    values = 1.0 - 0.02 * np.minimum(EPOCHS, 30)
    res = detect_plateau(values, higher_better=False)
    assert EPOCHS[res.index] == 30
    assert res.value == pytest.approx(0.4)


def test_min_delta_and_patience_come_from_params():
    values = _rise_then_flat(30, 0.01)
    # with min_delta 0.02 the 0.01-per-epoch climb already counts as flat
    assert EPOCHS[detect_plateau(values, Params(min_delta=0.02)).index] == 28
    rule = Params(min_delta=0.02, patience=3).plateau_rule("val_iou")
    assert "gains at most 0.02 over the next 3 epochs and never more than 0.06" in rule


def test_centred_median_ignores_single_spikes():
    values = np.full(11, 0.5)
    values[5] = 0.9
    assert np.allclose(smooth_centred(values), 0.5)


def test_plateau_table_one_row_per_trial_with_epochs():
    rows = []
    for seed, corner in ((0, 15), (1, None)):
        curve = 0.01 * (EPOCHS if corner is None else np.minimum(EPOCHS, corner))
        rows.append(
            pd.DataFrame(
                {
                    "cell_id": "c0",
                    "seed": seed,
                    "image_size": 64,
                    "dataset_size": 100,
                    "epochs": 80,
                    "batch_size": 8,
                    "epoch": EPOCHS,
                    "val_iou": curve,
                }
            )
        )
    # rows in any order: the table sorts each trial by epoch
    table = plateau_table(pd.concat(rows).sample(frac=1, random_state=0))
    assert list(table["seed"]) == [0, 1]
    assert table.loc[0, "plateau_epoch"] == 15
    assert table.loc[0, "epochs_after_plateau"] == 65
    assert table.loc[0, "plateau_value"] == pytest.approx(0.15)
    assert pd.isna(table.loc[1, "plateau_epoch"])
    assert pd.isna(table.loc[1, "gain_after_plateau"])
