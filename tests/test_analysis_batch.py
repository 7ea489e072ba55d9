import math

import numpy as np
import pandas as pd
import pytest

from analysis.baselines import Baselines
from analysis.batch import (
    batch_comparison_table,
    batch_difference_table,
    batch_rule,
    batch_sentences,
    get_steps_info,
    get_steps_plot,
    group_keys,
    lr_text,
)
from analysis.critical_batch import (
    critical_batch_sentences,
    critical_batch_table,
    fit_tradeoff,
    steps_to_target_table,
)
from analysis.params import Params

LR = "lr 0.003 for every batch size (lr_scaling none)"


def _curves(runs: dict[tuple, np.ndarray], epochs_levels: tuple[int, ...] = ()) -> pd.DataFrame:
    """(image_size, dataset_size, batch_size, seed) → the run's val_iou per epoch.

    Every run is recorded as the runner records it: one trial per ``epochs`` level (the
    run's length by default), the shorter trials holding the run's first epochs."""
    rows = []
    for (image, data, batch, seed), values in runs.items():
        length = len(values)
        run = f"img{image}_n{data}_ep{length}_bs{batch}_s{seed}"
        for epochs in epochs_levels or (length,):
            cell = f"img{image}_n{data}_ep{epochs}_bs{batch}"
            for epoch in range(1, epochs + 1):
                rows.append(
                    {
                        "cell_id": cell, "seed": seed, "image_size": image,
                        "dataset_size": data, "epochs": epochs, "batch_size": batch,
                        "training_run": run, "epoch": epoch,
                        "step": epoch * math.ceil(data / batch),
                        "val_iou": values[epoch - 1],
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def _by_steps(batch: int, data: int = 24, epochs: int = 16, seed_shift: float = 0.0):
    """A curve that depends on optimizer steps only: more updates, higher IoU."""
    steps = np.arange(1, epochs + 1) * math.ceil(data / batch)
    return 0.2 + 0.6 * (1 - np.exp(-steps / 60)) + seed_shift


def _steps_only_study(noise: float = 0.002) -> pd.DataFrame:
    """Batch 2 and 4 at 128 px and 24 images, 3 seeds, 8- and 16-epoch cells sharing
    runs; a per-seed shift common to both batch sizes plus a little noise."""
    rng = np.random.default_rng(3)
    runs = {}
    for seed, shift in enumerate((-0.01, 0.0, 0.012)):
        for batch in (2, 4):
            values = _by_steps(batch, seed_shift=shift) + rng.normal(0, noise, 16)
            runs[(128, 24, batch, seed)] = values
    return _curves(runs, epochs_levels=(8, 16))


def test_batch_sizes_are_read_at_equal_epochs_and_at_equal_steps():
    curves = _steps_only_study()
    table = batch_comparison_table(curves, "val_iou")
    table = table.set_index(["comparison", "batch_size"])
    epochs = table.loc["equal epochs"]
    assert (epochs["budget"] == 16).all()
    assert list(epochs["epoch"]) == [16, 16]
    assert list(epochs["step"]) == [192, 96]
    steps = table.loc["equal steps"]
    assert (steps["budget"] == 96).all()
    assert list(steps["epoch"]) == [8, 16]  # batch 2 has 96 steps after 8 epochs
    assert list(steps["step"]) == [96, 96]
    # shared runs are read once: 3 seeds, not the 6 rows of the 8- and 16-epoch cells
    assert (table["n"] == 3).all()
    run = curves[(curves["epochs"] == 16) & (curves["batch_size"] == 2)]
    at_8 = run[run["epoch"] == 8]["val_iou"].mean()
    assert steps.loc[2, "mean"] == pytest.approx(at_8)
    assert (table["ci_low"] < table["mean"]).all() and (table["mean"] < table["ci_high"]).all()


def test_the_step_budget_is_met_from_below_without_interpolation():
    # 20 images: batch 3 takes 7 steps an epoch, batch 4 takes 5; 10 epochs each
    runs = {(64, 20, b, s): np.linspace(0.3, 0.7, 10) + s / 100 for b in (3, 4) for s in range(3)}
    table = batch_comparison_table(_curves(runs), "val_iou").set_index(["comparison", "batch_size"])
    assert table.loc[("equal steps", 3), "budget"] == 50
    assert table.loc[("equal steps", 3), "epoch"] == 7  # 49 steps; epoch 8 would be 56
    assert table.loc[("equal steps", 3), "step"] == 49
    mean = table.loc[("equal steps", 3), "mean"]
    assert mean == pytest.approx(np.linspace(0.3, 0.7, 10)[6] + 0.01)


def test_groups_keep_other_factors_apart_and_skip_single_batch_groups():
    runs = {(64, 24, b, s): _by_steps(b) for b in (2, 4) for s in range(2)}
    runs |= {(64, 48, b, s): _by_steps(b, data=48) for b in (2, 4) for s in range(2)}
    runs |= {(128, 24, 2, s): _by_steps(2) for s in range(2)}  # one batch size: no group
    table = batch_comparison_table(_curves(runs), "val_iou")
    assert sorted(table.groupby(["image_size", "dataset_size"]).groups) == [(64, 24), (64, 48)]
    steps = table[table["comparison"] == "equal steps"].set_index(["dataset_size", "batch_size"])
    assert steps.loc[(48, 2), "budget"] == 192 and steps.loc[(48, 2), "epoch"] == 8
    assert steps["ci_low"].isna().all()  # 2 seeds: below min_seeds, no interval


def test_differences_say_which_comparison_and_tell_apart_only_beyond_noise():
    table = batch_difference_table(_steps_only_study(), "val_iou").set_index("comparison")
    epochs, steps = table.loc["equal epochs"], table.loc["equal steps"]
    assert epochs["best_batch"] == 2 and epochs["batch_size"] == 4
    planted = _by_steps(2)[-1] - _by_steps(4)[-1]
    assert epochs["diff"] == pytest.approx(planted, abs=0.005)
    assert epochs["ci_low"] > 0
    assert epochs["best_step"] == 192 and epochs["other_step"] == 96
    assert steps["ci_low"] < 0 < steps["ci_high"]  # the same curve in steps
    assert abs(steps["diff"]) < 0.005
    assert epochs["n"] == 3 and epochs["groups"] == 1


def test_batch_sentences_name_the_comparison_the_updates_and_the_lr():
    table = batch_difference_table(_steps_only_study(), "val_iou")
    ep, st, lr = batch_sentences(table, "val_iou", LR)
    assert ep.startswith("At equal epochs (16 epochs), batch 2 scores highest (val_iou 0.775)")
    assert ": batch 2 beats batch 4 (0.679) by 0.09" in ep
    assert ep.endswith(
        "— but batch 2 had 2× the optimizer steps of batch 4 there (3 seeds, 1 group)."
    )
    assert st.startswith("At equal steps (96 steps), batch 4 scores highest (val_iou 0.679): ")
    assert "batch 4 and batch 2 (0.678): cannot tell apart, difference 0.001 [" in st
    assert lr == (
        f"Batch sizes trained with {LR}; differences are means over groups, paired by seed, "
        "with 95% t intervals over seeds."
    )
    assert batch_sentences(table.iloc[0:0], "val_iou", LR) == []


def test_lr_text_states_the_learning_rate_and_its_scaling():
    assert lr_text({"train": {"lr": 0.003, "lr_scaling": "none"}}) == LR
    linear = {"train": {"lr": 0.001, "lr_scaling": "linear"}, "factors": {"batch_size": [4, 8]}}
    assert lr_text(linear) == (
        "lr 0.001 at batch 4, scaled in proportion to the batch size (lr_scaling linear)"
    )
    assert lr_text({}) == "learning rate not recorded"


# McCandlish et al. 2018: steps to a target follow S(B) = S_min (1 + B_crit / B)
BATCHES = (2, 4, 8, 16, 32, 64)
FLOOR, TOP = 0.1, 0.8
TRIVIAL = Baselines(
    None, {}, {"all background": {"val_iou": 0.0}, "all foreground": {"val_iou": FLOOR}}
)


def _planted(b_crit: float = 16.0, s_min: float = 200.0, batches=BATCHES, jitter=0.05):
    """Curves rising as FLOOR + (TOP − FLOOR)(1 − exp(−k · steps / S(B))), with k such
    that a run reaches 80 % of the way from FLOOR to TOP at exactly S(B) steps (×
    a per-seed log-normal jitter); 1024 images, 80 epochs, 3 seeds."""
    rng = np.random.default_rng(11)
    k = math.log(5.0)
    runs = {}
    for b in batches:
        for seed in range(3):
            s = s_min * (1 + b_crit / b) * math.exp(rng.normal(0, jitter))
            steps = np.arange(1, 81) * math.ceil(1024 / b)
            curve = FLOOR + (TOP - FLOOR) * (1 - np.exp(-k * steps / s))
            runs[(128, 1024, b, seed)] = curve + rng.normal(0, 0.001, 80)
    return _curves(runs)


def test_a_planted_critical_batch_size_is_recovered():
    (row,) = critical_batch_table(_planted(), "val_iou", TRIVIAL).to_dict("records")
    assert row["why"] == ""
    assert row["floor"] == FLOOR and row["floor_from"] == "all foreground"
    assert row["target"] == pytest.approx(FLOOR + 0.8 * (TOP - FLOOR), abs=0.003)
    assert row["points"] == 18 and row["unreached"] == 0 and row["levels"] == 6
    assert 8 <= row["b_crit"] <= 24  # planted 16, ±50 %
    assert 100 <= row["s_min"] <= 300  # planted 200
    assert row["ci_low"] < 16 < row["ci_high"]
    assert row["r2"] > 0.9
    (sentence,) = critical_batch_sentences(pd.DataFrame([row]), "val_iou")
    assert sentence.startswith("Critical batch size (image 128, dataset 1024; batches 2, 4, 8")
    assert "B_crit ≈ " in sentence and "McCandlish et al. 2018" in sentence


def test_steps_to_target_are_interpolated_between_epochs():
    points = steps_to_target_table(_planted(jitter=0.0), "val_iou", TRIVIAL)
    at = points.groupby("batch_size")["steps"].mean()
    planted = pd.Series([200 * (1 + 16 / b) for b in BATCHES], index=list(BATCHES))
    # linear interpolation of a concave curve crosses a little late, never early
    assert ((at / planted).between(0.97, 1.15)).all()
    assert (points["examples"] == points["batch_size"] * points["steps"]).all()
    assert not points["first_epoch"].any()


def test_without_baselines_the_floor_is_the_lowest_first_epoch_mean():
    curves = _planted()
    points = steps_to_target_table(curves, "val_iou", None)
    first = curves[curves["epoch"] == 1].groupby("batch_size")["val_iou"].mean().min()
    assert points["floor_from"].eq("first epoch").all()
    assert points["floor"].iloc[0] == pytest.approx(first)


def test_critical_batch_says_why_it_cannot_be_fitted():
    two = critical_batch_table(_planted(batches=(8, 16)), "val_iou", TRIVIAL)
    assert two.loc[0, "why"] == "2 batch sizes; the fit needs ≥ 3"
    assert np.isnan(two.loc[0, "b_crit"])
    assert critical_batch_sentences(two, "val_iou") == []  # < 3 levels: no sentence
    beyond = critical_batch_table(_planted(), "val_iou", TRIVIAL, Params(target_fraction=1.05))
    why = beyond.loc[0, "why"]
    assert why.startswith("batch ") and "never reaches the target" in why
    (sentence,) = critical_batch_sentences(beyond, "val_iou")
    assert "cannot be fitted — batch" in sentence


def test_fit_tradeoff_is_exact_on_exact_points_and_rejects_non_positive_terms():
    batch = np.repeat([2.0, 4.0, 8.0, 16.0], 3)
    fit = fit_tradeoff(batch, 100 + 1600 / batch)
    assert fit.s_min == pytest.approx(100) and fit.e_min == pytest.approx(1600)
    assert fit.b_crit == pytest.approx(16) and fit.r2 == pytest.approx(1)
    assert fit.ci_low == pytest.approx(16) and fit.ci_high == pytest.approx(16)
    assert fit.why == ""
    perfect = fit_tradeoff(batch, 1000 / batch - 10)
    assert perfect.why.startswith("non-positive S_min (-10)") and np.isnan(perfect.b_crit)
    flat = fit_tradeoff(batch, 100 - 400 / batch)  # more steps for larger batches
    assert flat.why.startswith("non-positive E_min")
    assert fit_tradeoff(np.array([2.0, 4.0]), np.array([10.0, 5.0])).why.endswith("needs ≥ 3")


def test_bcrit_interval_is_reproducible_and_absent_with_too_few_seeds():
    rng = np.random.default_rng(0)
    batch = np.repeat([2.0, 4.0, 8.0, 16.0], 3)
    steps = (100 + 1600 / batch) * np.exp(rng.normal(0, 0.1, len(batch)))
    a, b = fit_tradeoff(batch, steps), fit_tradeoff(batch, steps)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.ci_low < a.b_crit < a.ci_high
    two_seeds = fit_tradeoff(np.repeat([2.0, 4.0, 8.0], 2), np.repeat([900.0, 500.0, 300.0], 2))
    assert np.isnan(two_seeds.ci_low) and two_seeds.why == ""


def test_steps_plot_info_has_the_best_groups_first():
    runs = {(64, 24, b, s): _by_steps(b) - 0.1 for b in (2, 4) for s in range(3)}
    runs |= {(128, 24, b, s): _by_steps(b) + s / 100 for b in (2, 4) for s in range(3)}
    info = get_steps_info(_curves(runs), "val_iou", lr=LR, baselines={"all foreground": 0.3})
    assert [p.title for p in info.panels] == ["image 128, dataset 24", "image 64, dataset 24"]
    lines = info.panels[0].lines.set_index(["batch_size", "epoch"])
    assert lines.loc[(2, 16), "step"] == 192 and lines.loc[(4, 16), "step"] == 96
    assert lines.loc[(2, 16), "mean"] == pytest.approx(_by_steps(2)[-1] + 0.01)
    assert (lines["n"] == 3).all()
    assert info.groups == 2
    (top,) = get_steps_info(_curves(runs), "val_iou", limit=1).panels
    assert top.title.startswith("image 128")
    fig = get_steps_plot(info)
    assert LR in fig.get_suptitle()
    assert len(fig.axes) == 2


def test_batch_rule_states_the_thresholds_it_uses():
    rule = batch_rule("val_iou", Params(target_fraction=0.7, n_boot_bcrit=500, window=3))
    assert "70% of the way from the best trivial predictor's score" in rule
    assert "500 resamples" in rule and "centred 3-epoch median" in rule
    assert "not interpolated" in rule


def test_without_training_runs_the_longest_trial_per_seed_is_the_run():
    curves = _steps_only_study().drop(columns=["training_run", "step"])
    table = batch_comparison_table(curves, "val_iou").set_index(["comparison", "batch_size"])
    assert (table["n"] == 3).all()
    assert table.loc[("equal epochs", 2), "budget"] == 16
    assert table.loc[("equal steps", 2), "budget"] == 96  # steps counted from the factors
    assert table.loc[("equal steps", 2), "epoch"] == 8


def test_batch_groups_hold_a_crossed_setting_but_not_one_tied_to_the_batch_size():
    curves = _curves({(64, 24, b, s): np.linspace(0.3, 0.6, 4) for b in (4, 8) for s in (0, 1)})
    factors = ("image_size", "dataset_size", "epochs", "batch_size", "train.lr")
    crossed = pd.concat([curves.assign(**{"train.lr": lr}) for lr in (3e-4, 1e-3)])
    for col in ("cell_id", "training_run"):
        crossed[col] += "_train.lr=" + crossed["train.lr"].astype(str)
    assert group_keys(crossed, factors) == ["image_size", "dataset_size", "train.lr"]
    table = batch_comparison_table(crossed, "val_iou", factors=factors)
    assert sorted(table["train.lr"].unique()) == [3e-4, 1e-3]
    # levels set together ({batch_size: 4, train.lr: 3e-4}, {8, 1e-3}): each batch size is
    # read at its own lr, so lr does not split the groups
    tied = curves.assign(**{"train.lr": curves["batch_size"].map({4: 3e-4, 8: 1e-3})})
    assert group_keys(tied, factors) == ["image_size", "dataset_size"]
    table = batch_comparison_table(tied, "val_iou", factors=factors)
    assert set(table["batch_size"]) == {4, 8} and "train.lr" not in table.columns


def test_lr_text_says_when_the_learning_rate_is_a_factor_or_set_with_the_batch():
    crossed = {"train": {"lr": 0.001, "lr_scaling": "none"},
               "factors": {"batch_size": [4, 8], "train.lr": [0.001, 0.0003]}}  # fmt: skip
    assert lr_text(crossed) == "lr as a factor (0.0003, 0.001), compared at each lr level"
    crossed["train"]["lr_scaling"] = "linear"
    assert lr_text(crossed) == (
        "lr as a factor (0.0003, 0.001 at batch 4), scaled in proportion to the batch size "
        "(lr_scaling linear), compared at each lr level"
    )
    grouped = {"train": {"lr": 0.001}, "factors": {"batch_size": [4, 16], "grouped": [
        {"batch_size": 16, "train.lr": 0.001}, {"batch_size": 4, "train.lr": 0.0003}]}}
    assert lr_text(grouped) == "lr set with the batch size (batch 4: 0.0003; batch 16: 0.001)"
