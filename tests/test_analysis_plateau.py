import numpy as np
import pandas as pd
import pytest

from analysis.baselines import Baselines
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


TRIVIAL_BASELINES = Baselines.from_dict(
    {
        "eval_size": 128,
        "splits": {"val": {"images": 6, "class_pixels": [23, 77]}},
        "predictors": {
            "all background": {"val_miou": 0.115},
            "all foreground": {"val_miou": 0.384},
        },
    }
)


def _run(curve: np.ndarray, trial_epochs: tuple[int, ...], seed: int = 0) -> pd.DataFrame:
    """The trials of one training run: each reads the run's first ``epochs`` epochs."""
    run = f"img64_n12_ep{max(trial_epochs)}_bs2_s{seed}"
    return pd.concat(
        pd.DataFrame(
            {
                "cell_id": f"img64_n12_ep{n}_bs2",
                "seed": seed,
                "image_size": 64,
                "dataset_size": 12,
                "epochs": n,
                "batch_size": 2,
                "training_run": run,
                "epoch": np.arange(1, n + 1),
                "val_miou": curve[:n],
            }
        )
        for n in trial_epochs
    )


def _table(curves: pd.DataFrame) -> pd.DataFrame:
    """The plateau table with the run's trivial scores, one row per trial by its epochs."""
    table = plateau_table(curves, "val_miou", Params(), TRIVIAL_BASELINES)
    return table.set_index("epochs").sort_index()


def test_true_plateau_at_epoch_6_is_read_by_every_trial_of_the_run():
    run = 0.3 + 0.08 * np.minimum(np.arange(1, 17), 6)
    table = _table(_run(run, (4, 8, 16)))
    assert table["run_plateau_epoch"].tolist() == [6, 6, 6]
    assert table["run_epochs"].tolist() == [16, 16, 16]
    assert table["trial_epoch"].tolist() == [4, 8, 16]
    # plateaued by epoch 6 at its epoch 8 and 16; not by its epoch 4
    assert table.loc[8, "plateau_epoch"] == 6 and table.loc[16, "plateau_epoch"] == 6
    assert pd.isna(table.loc[4, "plateau_epoch"])
    assert table.loc[8, "epochs_after_plateau"] == 2 and table.loc[16, "epochs_after_plateau"] == 10
    # the 4-epoch trial: its run gains 0.78 − 0.62 after it
    assert table.loc[4, "gain_after_trial"] == pytest.approx(0.16)
    assert table.loc[8, "gain_after_trial"] == pytest.approx(0.0)
    assert np.isnan(table.loc[16, "gain_after_trial"])
    assert table["plateau_value"].tolist() == pytest.approx([0.78] * 3)
    assert table["stuck_epochs"].tolist() == [0, 0, 0]


def test_stuck_start_then_take_off_is_never_a_plateau():
    # flat at the all-foreground score for 8 epochs, then up to 0.584 and flat from 12
    epochs = np.arange(1, 21)
    run = 0.384 + 0.05 * np.clip(epochs - 8, 0, 4)
    table = _table(_run(run, (8, 20)))
    assert table["run_plateau_epoch"].tolist() == [12, 12]
    assert pd.isna(table.loc[8, "plateau_epoch"])
    assert table.loc[20, "plateau_epoch"] == 12
    # "not by its epoch 8: the run gains 0.20 later"
    assert table.loc[8, "gain_after_trial"] == pytest.approx(0.2)
    assert table["stuck_epochs"].tolist() == [8, 8]
    # the 8-epoch trial's own curve is flat: read alone it would "plateau at epoch 1"
    assert detect_plateau(run[:8]).index == 0


def test_a_run_that_never_leaves_the_trivial_score_has_no_plateau():
    run = np.full(16, 0.384) + np.random.default_rng(0).normal(0, 0.001, 16)
    table = plateau_table(_run(run, (8, 16)), "val_miou", Params(), TRIVIAL_BASELINES)
    assert table["run_plateau_epoch"].isna().all()
    assert table["plateau_epoch"].isna().all()
    assert table["stuck_epochs"].tolist() == [16, 16]
    # without baselines nothing tells a stuck model from a plateau
    assert plateau_table(_run(run, (8, 16)), "val_miou")["plateau_epoch"].tolist() == [1, 1]


def test_no_trial_is_plateaued_while_its_run_gains_more_than_the_rule_allows():
    params, rng = Params(), np.random.default_rng(7)
    epochs = np.arange(1, 31)
    runs = []
    for seed in range(150):
        # a stall (any length, possibly none) and then a climb of random size and length
        stall, climb = rng.integers(0, 20), rng.integers(1, 12)
        slope = rng.uniform(0.0, 0.03)
        curve = 0.5 + slope * np.clip(epochs - stall, 0, climb) + rng.normal(0, 0.001, 30)
        runs.append(_run(curve, (10, 20, 30), seed))
    curves = pd.concat(runs)
    table = plateau_table(curves, "val_miou", params)
    plateaued = table[table["plateau_epoch"].notna()]
    assert 100 < len(plateaued) < len(table)
    allowed = params.patience * params.min_delta + 1e-9
    whole = curves[curves["epochs"] == 30].groupby("training_run")["val_miou"]
    smoothed = {run: smooth_centred(v.to_numpy()) for run, v in whole}
    for row in plateaued.itertuples():
        smooth, at = smoothed[row.training_run], row.plateau_epoch - 1
        assert smooth[at:].max() - smooth[at] <= allowed
    # read alone, trials' own curves would have called plateaus that their runs break
    alone = plateau_table(curves.drop(columns="training_run"), "val_miou", params)
    broken = alone["plateau_epoch"].notna() & table["plateau_epoch"].isna()
    assert broken.sum() > 20


def test_rolling_runs_equals_pandas_rolling_curve_by_curve():
    """The one-pass rolling the plateau and overfitting tables use: per curve, what
    pandas' rolling gives on that curve alone (NaNs, curves shorter than the window,
    centred windows of odd and even width)."""
    from analysis.load import rolling_runs

    rng = np.random.default_rng(7)
    for _ in range(40):
        lengths = rng.integers(1, 12, rng.integers(1, 20))
        bounds = np.r_[0, np.cumsum(lengths)]
        values = rng.normal(size=bounds[-1])
        values[rng.random(len(values)) < 0.15] = np.nan
        for window, center, needed, how in (
            (5, True, 1, "median"), (4, True, 1, "median"), (5, False, 5, "mean"),
            (5, False, 5, "min"), (3, True, 2, "mean"), (1, False, 1, "min"),
        ):  # fmt: skip
            got = rolling_runs(values, bounds, window, how, center, needed)
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                alone = pd.Series(values[lo:hi]).rolling(window, center=center, min_periods=needed)
                want = getattr(alone, how)().to_numpy()
                np.testing.assert_allclose(got[lo:hi], want, rtol=1e-12, atol=1e-12)
