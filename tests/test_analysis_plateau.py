import numpy as np
import pandas as pd
import pytest

from analysis.plateau import detect_plateau, plateau_table, smooth_centred

EPOCHS = np.arange(1, 81)


def _rise_then_flat(corner: int, slope: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 0.2 + slope * np.minimum(EPOCHS, corner) + rng.normal(0, noise, len(EPOCHS))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("corner", [10, 20, 45])
@pytest.mark.parametrize("slope", [0.01, 0.03])
def test_plateau_found_at_the_corner_without_smoothing_lag(corner, slope, seed):
    values = _rise_then_flat(corner, slope, noise=0.001, seed=seed)
    res = detect_plateau(values)
    assert res.index is not None
    assert abs(EPOCHS[res.index] - corner) <= 1
    assert res.value == pytest.approx(0.2 + slope * corner, abs=0.003)
    assert res.gain_after == pytest.approx(0.0, abs=0.003)


def test_saturating_noisy_curve_plateaus_where_gains_fall_below_min_delta():
    rng = np.random.default_rng(1)
    values = 0.9 - 0.7 * np.exp(-EPOCHS / 8) + rng.normal(0, 0.003, len(EPOCHS))
    res = detect_plateau(values)
    # the noiseless gain over 5 epochs drops under 0.005 near epoch 30
    assert 22 <= EPOCHS[res.index] <= 38


@pytest.mark.parametrize("seed", range(5))
def test_rising_curve_has_no_plateau(seed):
    rng = np.random.default_rng(seed)
    values = 0.1 + 0.008 * EPOCHS + rng.normal(0, 0.002, len(EPOCHS))
    assert detect_plateau(values).index is None


def test_plateau_in_last_epochs_is_not_yet_a_plateau():
    values = np.minimum(EPOCHS, 77) * 0.01
    assert detect_plateau(values, patience=5).index is None
    assert EPOCHS[detect_plateau(values, patience=3).index] == 77


def test_a_stall_that_training_breaks_out_of_is_not_the_plateau():
    stall_then_rise = np.where(EPOCHS < 30, 0.5, 0.5 + 0.01 * (np.minimum(EPOCHS, 60) - 30))
    res = detect_plateau(stall_then_rise)
    assert EPOCHS[res.index] == 60
    assert res.value == pytest.approx(0.8)
    still_rising_after_stall = np.where(EPOCHS < 30, 0.5, 0.5 + 0.01 * (EPOCHS - 30))
    assert detect_plateau(still_rising_after_stall).index is None


def test_gain_after_plateau_shows_what_stopping_there_gives_up():
    falls_back = 0.8 - 0.002 * np.clip(EPOCHS - 20, 0, None)
    assert detect_plateau(falls_back).gain_after == pytest.approx(-0.12, abs=0.003)


def test_loss_curves_plateau_when_they_stop_falling():
    values = 1.0 - 0.02 * np.minimum(EPOCHS, 30)
    res = detect_plateau(values, higher_better=False)
    assert EPOCHS[res.index] == 30
    assert res.value == pytest.approx(0.4)


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
    table = plateau_table(pd.concat(rows))
    assert list(table["seed"]) == [0, 1]
    assert table.loc[0, "plateau_epoch"] == 15
    assert table.loc[0, "epochs_after_plateau"] == 65
    assert table.loc[0, "plateau_value"] == pytest.approx(0.15)
    assert pd.isna(table.loc[1, "plateau_epoch"])
    assert pd.isna(table.loc[1, "gain_after_plateau"])
