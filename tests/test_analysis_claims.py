"""Claims judged: every rule of thumb gets the right verdict on planted tables (supported,
contradicted, inconclusive with noisy seeds, not testable when the grid's levels do not
reach it, with the levels that would), and the first-screen sentence counts them."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np
import pandas as pd
import pytest

from analysis.claims import CLAIM_COLUMNS, claim_sentence, judge_claims, study_claims
from analysis.params import Params
from analysis.synthetic import synthetic_tables
from gridrun.claims import RULES_OF_THUMB, Claim
from gridrun.layout import FACTORS

IMAGE, EPOCHS, BATCH, FEWER_EPOCHS, OVERFIT, FASTER = RULES_OF_THUMB
Planted = Callable[[pd.DataFrame], np.ndarray]


def _tables(
    levels: dict[str, list[int]],
    metric: Planted = lambda f: np.full(len(f), 0.6),
    *,
    seeds: int = 3,
    noise: float = 0.002,
    best_epoch: Planted | None = None,
    train_time: Planted | None = None,
    gap: Planted | None = None,
    rng_seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A finished study's ``final`` frame and its curves' last rows, with planted values.

    Every seed gets its own offset (shared by all its trials), which the paired tests must
    take out; each trial adds ``noise``. Cells differing only in epochs share a run.
    """
    rng = np.random.default_rng(rng_seed)
    grid = {"image_size": [128], "dataset_size": [100], "epochs": [60], "batch_size": [4]}
    grid.update(levels)
    rows = pd.DataFrame(product(*grid.values(), range(seeds)), columns=[*FACTORS, "seed"])
    rows["cell_id"] = [
        f"img{r.image_size}_n{r.dataset_size}_ep{r.epochs}_bs{r.batch_size}"
        for r in rows.itertuples()
    ]
    longest = max(grid["epochs"])
    rows["training_run"] = [
        f"img{r.image_size}_n{r.dataset_size}_ep{longest}_bs{r.batch_size}_s{r.seed}"
        for r in rows.itertuples()
    ]
    offset = rng.normal(0, 0.03, seeds)[rows["seed"]]
    rows["final"] = metric(rows) + offset + rng.normal(0, noise, len(rows))
    rows["best"] = rows["final"]
    epochs = rows["epochs"].to_numpy(float)
    rows["best_epoch"] = np.minimum(best_epoch(rows), epochs) if best_epoch else epochs / 2
    rows["steps"] = epochs * np.ceil(rows["dataset_size"] / rows["batch_size"])
    rows["train_time_s"] = train_time(rows) if train_time else 10.0 + rng.normal(0, 0.1, len(rows))
    curves = rows[["cell_id", "seed", *FACTORS, "training_run"]].assign(epoch=rows["epochs"])
    curves["val_iou"] = rows["final"]
    planted_gap = gap(rows) if gap else np.full(len(rows), 0.05)
    curves["train_iou"] = rows["final"] + planted_gap + rng.normal(0, noise, len(rows))
    return rows, curves


def _judge(claim: Claim, tables, metric: str = "val_iou", **params) -> pd.Series:
    final, curves = tables
    table = judge_claims([claim], final, curves, metric, Params(**params))
    assert list(table.columns) == CLAIM_COLUMNS
    return table.iloc[0]


def _big(f: pd.DataFrame, factor: str, at: int) -> np.ndarray:
    return (f[factor] >= at).to_numpy(float)


# --- "512 or 1024 px is better" -----------------------------------------------------


def test_larger_images_better_by_a_planted_margin_is_supported() -> None:
    sizes = {"image_size": [256, 512, 1024]}
    row = _judge(IMAGE, _tables(sizes, lambda f: 0.6 + 0.05 * _big(f, "image_size", 512)))
    assert row["verdict"] == "supported"
    assert row["source"] == "rule of thumb"
    assert row["difference"] == pytest.approx(0.05, abs=0.005)
    assert row["ci_low"] > 0.03 and row["p"] < 0.05 and row["seeds"] == 3
    assert "image_size ≥ 512: 0.6" in row["evidence"]
    assert "other levels (256)" in row["evidence"]


def test_larger_images_that_score_worse_contradict_the_rule() -> None:
    sizes = {"image_size": [256, 512]}
    row = _judge(IMAGE, _tables(sizes, lambda f: 0.6 - 0.05 * _big(f, "image_size", 512)))
    assert row["verdict"] == "contradicted"
    assert row["difference"] == pytest.approx(-0.05, abs=0.005)


def test_an_advantage_surely_under_the_margin_contradicts_better() -> None:
    sizes = {"image_size": [256, 512]}
    tables = _tables(sizes, lambda f: 0.6 + 0.002 * _big(f, "image_size", 512), noise=0.0005)
    row = _judge(IMAGE, tables)
    assert row["verdict"] == "contradicted"
    assert "under the margin 0.01" in row["evidence"]
    # with a margin it does clear, the same grid supports the rule
    assert _judge(IMAGE, tables, margin=0.001)["verdict"] == "supported"


def test_noisy_seeds_leave_better_inconclusive() -> None:
    sizes = {"image_size": [256, 512]}
    tables = _tables(sizes, lambda f: 0.6 + 0.01 * _big(f, "image_size", 512), noise=0.05)
    row = _judge(IMAGE, tables)
    assert row["verdict"] == "inconclusive"
    assert row["ci_low"] < 0 < row["ci_high"]


def test_images_below_512_cannot_test_the_rule() -> None:
    row = _judge(IMAGE, _tables({"image_size": [64, 128]}))
    assert row["verdict"] == "not testable"
    assert row["needed"] == "the grid's image_size levels are 64, 128: add a level ≥ 512 to test it"
    assert np.isnan(row["p"])


def test_one_seed_tests_nothing() -> None:
    sizes = {"image_size": [256, 512]}
    row = _judge(IMAGE, _tables(sizes, lambda f: 0.6 + 0.1 * _big(f, "image_size", 512), seeds=1))
    assert (row["verdict"], row["needed"], row["seeds"]) == ("inconclusive", "two or more seeds", 0)


def test_better_on_a_loss_means_lower() -> None:
    sizes = {"image_size": [256, 512]}
    tables = _tables(sizes, lambda f: 0.4 - 0.05 * _big(f, "image_size", 512))
    row = _judge(IMAGE, tables, metric="val_loss")
    assert row["verdict"] == "supported"
    assert row["difference"] == pytest.approx(-0.05, abs=0.005)  # 0.05 less loss at ≥ 512


# --- "around 60-70 epochs" ----------------------------------------------------------


def _peak(at: float, width: float = 40.0) -> Planted:
    return lambda f: 0.7 - 0.1 * ((f["epochs"].to_numpy(float) - at) / width) ** 2


def test_a_peak_at_64_epochs_supports_60_to_70() -> None:
    row = _judge(EPOCHS, _tables({"epochs": [30, 64, 120]}, _peak(64)))
    assert row["verdict"] == "supported"
    assert row["evidence"].startswith("best in 60–70: epochs 64 0.7")


def test_still_rising_at_120_epochs_contradicts_60_to_70() -> None:
    row = _judge(EPOCHS, _tables({"epochs": [30, 64, 120]}, _peak(200, 100)))
    assert row["verdict"] == "contradicted"
    assert "120 beats every level in 60–70" in row["evidence"]


def test_noisy_seeds_leave_60_to_70_inconclusive() -> None:
    row = _judge(EPOCHS, _tables({"epochs": [30, 64, 120]}, _peak(64, 200), noise=0.05))
    assert row["verdict"] == "inconclusive"


def test_16_epoch_runs_cannot_test_60_to_70_and_say_how_far_to_train() -> None:
    row = _judge(EPOCHS, _tables({"epochs": [4, 8, 16]}, _peak(100, 100)))
    assert row["verdict"] == "not testable"
    assert row["needed"] == (
        "the longest run is 16 epochs: train to ≥ 80 (with an epochs level in 60–70) "
        "to test 60–70"
    )


def test_a_grid_ending_inside_the_range_needs_a_longer_run() -> None:
    row = _judge(EPOCHS, _tables({"epochs": [30, 64]}, _peak(64)))
    assert row["verdict"] == "not testable"
    assert row["needed"] == "the longest run is 64 epochs: train to ≥ 80 to test 60–70"


# --- "a batch size of 4 is optimal" -------------------------------------------------


def _batch_peak(at: int) -> Planted:
    return lambda f: 0.7 - 0.03 * np.abs(np.log2(f["batch_size"].to_numpy(float) / at))


def test_a_peak_at_batch_4_supports_the_rule() -> None:
    row = _judge(BATCH, _tables({"batch_size": [2, 4, 8]}, _batch_peak(4)))
    assert row["verdict"] == "supported"


def test_batch_2_beating_4_contradicts_it_even_without_a_larger_batch() -> None:
    row = _judge(BATCH, _tables({"batch_size": [2, 4]}, _batch_peak(1)))
    assert row["verdict"] == "contradicted"
    assert "2 beats 4" in row["evidence"]


def test_batches_of_8_and_16_cannot_test_batch_4() -> None:
    row = _judge(BATCH, _tables({"batch_size": [8, 16]}, _batch_peak(4)))
    assert row["verdict"] == "not testable"
    assert row["needed"] == "the grid's batch_size levels are 8, 16: add 4 and 2 to test 4"


def test_noisy_seeds_leave_batch_4_inconclusive() -> None:
    tables = _tables({"batch_size": [2, 4, 8]}, _batch_peak(4), noise=0.05, rng_seed=1)
    assert _judge(BATCH, tables)["verdict"] == "inconclusive"


# --- "with a large data set you need fewer epochs" -----------------------------------


def _by_data(low: float, high: float) -> Planted:
    return lambda f: np.where(f["dataset_size"].to_numpy() > 100, high, low)


def test_runs_peaking_earlier_on_more_data_support_fewer_epochs() -> None:
    sizes = {"dataset_size": [100, 400], "epochs": [20, 60]}
    row = _judge(FEWER_EPOCHS, _tables(sizes, best_epoch=_by_data(40, 25)))
    assert row["verdict"] == "supported"
    # one value per training run, from its longest trial: the 20-epoch trials, best at
    # their last epoch, neither count nor make the runs look still improving
    assert row["difference"] == pytest.approx(-15)
    assert "best_epoch at dataset_size 100: 40 (every seed); at 400: 25" in row["evidence"]


def test_runs_peaking_later_on_more_data_contradict_fewer_epochs() -> None:
    sizes = {"dataset_size": [100, 400]}
    assert _judge(FEWER_EPOCHS, _tables(sizes, best_epoch=_by_data(25, 40)))["verdict"] == (
        "contradicted"
    )


def test_runs_best_at_their_last_epoch_cannot_say_when_they_peak() -> None:
    sizes = {"dataset_size": [100, 400], "epochs": [8, 16]}
    row = _judge(FEWER_EPOCHS, _tables(sizes, best_epoch=lambda f: f["epochs"].to_numpy(float)))
    assert row["verdict"] == "not testable"
    assert row["needed"] == (
        "6 of 6 runs are best at their last epoch, so they are still improving: train "
        "longer than 16 epochs to test it"
    )


def test_one_dataset_size_cannot_test_a_trend() -> None:
    row = _judge(FEWER_EPOCHS, _tables({"dataset_size": [12]}))
    assert row["verdict"] == "not testable"
    assert row["needed"] == (
        "the grid has one dataset_size level (12): add a larger one, e.g. 24, to test it"
    )


# --- "a bigger data set prevents overfitting" ----------------------------------------


def test_a_gap_that_shrinks_with_data_supports_less_overfitting() -> None:
    row = _judge(OVERFIT, _tables({"dataset_size": [100, 400]}, gap=_by_data(0.2, 0.02)))
    assert row["verdict"] == "supported"
    assert row["difference"] == pytest.approx(-0.18, abs=0.01)


def test_a_gap_that_grows_with_data_contradicts_it() -> None:
    row = _judge(OVERFIT, _tables({"dataset_size": [100, 400]}, gap=_by_data(0.02, 0.2)))
    assert row["verdict"] == "contradicted"


def test_an_unchanged_gap_contradicts_it_by_the_margin() -> None:
    tables = _tables({"dataset_size": [100, 400]}, gap=_by_data(0.1, 0.1), noise=0.0005)
    row = _judge(OVERFIT, tables)
    assert row["verdict"] == "contradicted"
    assert "under the margin 0.01" in row["evidence"]


def test_curves_without_a_training_metric_cannot_show_a_gap() -> None:
    final, curves = _tables({"dataset_size": [100, 400]})
    row = _judge(OVERFIT, (final, curves.drop(columns="train_iou")))
    assert row["verdict"] == "not testable"
    assert row["needed"] == "the curves have no training counterpart of val_iou"


# --- "larger batches train faster" ---------------------------------------------------


def _by_batch(scale: float) -> Planted:
    return lambda f: 10.0 * (f["batch_size"].to_numpy(float) / 4) ** scale


def test_time_falling_with_batch_supports_faster_training() -> None:
    row = _judge(FASTER, _tables({"batch_size": [2, 4, 8]}, train_time=_by_batch(-0.5)))
    assert row["verdict"] == "supported"
    assert row["difference"] == pytest.approx(10 * (2**-0.5 - 2**0.5))


def test_time_rising_with_batch_contradicts_it() -> None:
    row = _judge(FASTER, _tables({"batch_size": [2, 8]}, train_time=_by_batch(0.3)))
    assert row["verdict"] == "contradicted"


def test_equal_times_in_every_seed_leave_it_inconclusive() -> None:
    row = _judge(FASTER, _tables({"batch_size": [2, 8]}, train_time=_by_batch(0.0)))
    assert row["verdict"] == "inconclusive"
    assert "difference +0 in every seed" in row["evidence"]


def test_no_recorded_time_cannot_test_it() -> None:
    final, curves = _tables({"batch_size": [2, 8]})
    row = _judge(FASTER, (final.assign(train_time_s=np.nan), curves))
    assert row["verdict"] == "not testable"
    assert row["needed"] == "the trials table has no train_time_s"


# --- the study's claims and the first-screen sentence --------------------------------


def test_grid_file_claims_follow_the_rules_once_each() -> None:
    own = {"name": "bigger batches are worse", "factor": "batch_size", "kind": "trend",
           "direction": "decreases"}  # fmt: skip
    rule = IMAGE.model_dump(mode="json", exclude_none=True)
    claims, notes = study_claims({"claims": [own, rule]})
    assert claims == [*RULES_OF_THUMB, Claim(**own)] and notes == []
    final, curves = _tables({"batch_size": [2, 8]}, lambda f: 0.7 - 0.01 * f["batch_size"])
    table = judge_claims(claims, final, curves, "val_iou")
    assert table["source"].tolist() == ["rule of thumb"] * 6 + ["grid file"]
    assert table.iloc[-1]["verdict"] == "supported"
    assert claim_sentence(table) == (
        "Rules of thumb: 1 inconclusive, 5 not testable in this grid; the grid file's "
        "claims: 1 supported (see Rules of thumb)."
    )


def test_unreadable_grid_file_claims_are_a_note_and_the_rules_still_stand() -> None:
    claims, notes = study_claims({"claims": [{"factor": "epoch", "kind": "trend"}]})
    assert claims == list(RULES_OF_THUMB)
    assert notes == [
        "claims[0].factor: unknown factor 'epoch' (did you mean 'epochs'?); one of "
        "image_size, dataset_size, epochs, batch_size; the grid file's claims are skipped."
    ]


def test_sentence_counts_the_rules_and_is_empty_without_claims() -> None:
    table = pd.DataFrame({
        "source": ["rule of thumb"] * 6,
        "verdict": ["supported", "contradicted", "contradicted", *["not testable"] * 3],
    })  # fmt: skip
    assert claim_sentence(table) == (
        "Rules of thumb: 1 supported, 2 contradicted, 3 not testable in this grid "
        "(see Rules of thumb)."
    )
    assert claim_sentence(table.iloc[:0]) == ""


def test_a_null_factor_over_shared_runs_is_supported_in_about_alpha_of_studies() -> None:
    # 200 seeded studies where image_size does nothing, with noise per training run
    # (shared by its 30- and 60-epoch trials) and per seed: "supported" must be as rare as
    # the one-sided 5 % test promises (binomial 95 % range for 200 studies: 2 %-8.5 %)
    supported = 0
    for study in range(200):
        final, curves = _tables({"image_size": [256, 512], "epochs": [30, 60]}, rng_seed=study)
        runs = final["training_run"].astype("category").cat.codes.to_numpy()
        rng = np.random.default_rng([study, 1])
        final["final"] += rng.normal(0, 0.05, runs.max() + 1)[runs]
        supported += _judge(IMAGE, (final, curves))["verdict"] == "supported"
    assert 0.02 <= supported / 200 <= 0.085


def test_a_trend_over_a_text_setting_is_not_testable():
    trials, curves = synthetic_tables(
        image_sizes=(64,), dataset_sizes=(100,), epochs=(10,), batch_sizes=(8,), seeds=3,
        extra={"model.encoder": ("resnet18", "resnet34")},
    )  # fmt: skip
    final = trials.assign(final=trials["final_val_iou"])
    # note: built unvalidated, as gridrun.claims names only the four factors so far
    claim = Claim.model_construct(
        name="deeper encoders help", factor="model.encoder", kind="trend", levels=None,
        range=None, response="metric", direction="increases",
    )  # fmt: skip
    row = _judge(claim, (final, curves))
    assert row["verdict"] == "not testable"
    assert row["needed"] == "a trend needs numeric levels; model.encoder is text"
