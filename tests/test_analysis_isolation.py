import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.isolation import (
    ISOLATION_COLUMNS,
    expected_max,
    get_isolation_info,
    get_isolation_plot,
    isolation_sentences,
    isolation_table,
)
from analysis.load import load
from analysis.report import write_report
from analysis.synthetic import example_grid, synthetic_tables, write_synthetic_run
from gridrun.layout import FACTORS, TRIAL_ID, level_text, parse_trial_id, trial_id

LRS = (1e-4, 1e-3, 1e-2)
BEST_LR = {8: 1e-4, 16: 1e-3, 32: 1e-2}


def _planted(batch: int, lr: float) -> float:
    """Each batch size has its own best lr; at its best lr a larger batch is better, but
    averaged over the lrs batch 16 beats 32 (−0.08 per decade away from the best lr)."""
    peak = {8: 0.0, 16: 0.02, 32: 0.04}[batch]
    return peak - 0.08 * abs(math.log10(lr / BEST_LR[batch]))


def _lr_study(tmp_path: Path, effect, seeds: int = 3, nuisance: bool = True) -> Path:
    """A synthetic study with a `train.lr` factor: one synthetic_tables draw per lr (its
    own noise), `effect(batch, lr)` added to val_iou, ids as the runner writes them."""
    trial_parts, curve_parts = [], []
    for i, lr in enumerate(LRS):
        trials, curves = synthetic_tables(
            image_sizes=(64, 128), dataset_sizes=(100,), epochs=(12,), batch_sizes=(8, 16, 32),
            seeds=seeds, rng_seed=i,
        )  # fmt: skip
        suffix = f"_train.lr={level_text(lr)}"
        for frame in (trials, curves):
            frame["train.lr"] = lr
            frame["cell_id"] = frame["cell_id"] + suffix
            frame[TRIAL_ID] = [
                trial_id(c, s) for c, s in zip(frame["cell_id"], frame["seed"], strict=True)
            ]
            runs = [parse_trial_id(r) for r in frame["training_run"]]
            frame["training_run"] = [trial_id(c + suffix, s) for c, s in runs]
        shift = np.array([effect(b, lr) for b in trials["batch_size"]])
        trials["final_val_iou"] += shift
        curves["val_iou"] += np.array([effect(b, lr) for b in curves["batch_size"]])
        trial_parts.append(trials)
        curve_parts.append(curves)
    trials = pd.concat(trial_parts, ignore_index=True)
    curves = pd.concat(curve_parts, ignore_index=True)
    grid = example_grid(trials, name="lr")
    grid["factors"]["train.lr"] = list(LRS)
    if nuisance:
        grid["nuisance"] = ["train.lr"]
    return write_synthetic_run(tmp_path / "run", trials, curves, grid)


def _final(values: dict[tuple[int, float], list[float]]) -> pd.DataFrame:
    """One row per trial: batch size, lr and seed values given per (batch, lr) cell."""
    rows = []
    for (batch, lr), seeds in values.items():
        for seed, v in enumerate(seeds):
            f = {"image_size": 64, "dataset_size": 10, "epochs": 5, "batch_size": batch}
            rows.append({**f, "train.lr": lr, "cell_id": f"b{batch}_lr{lr}", "seed": seed,
                         "final": v})  # fmt: skip
    return pd.DataFrame(rows)


def test_exact_values_of_a_two_by_two_study():
    final = _final(
        {(8, 0.1): [0.50, 0.52], (8, 0.3): [0.60, 0.62], (16, 0.1): [0.70, 0.72],
         (16, 0.3): [0.40, 0.42]}
    )  # fmt: skip
    table = isolation_table(final, (*FACTORS, "train.lr"), ["train.lr"], "val_iou")
    assert list(table.columns) == ISOLATION_COLUMNS
    rows = table.set_index("level")
    assert list(table["factor"]) == ["batch_size", "batch_size"]
    assert rows.loc[8, "isolated_mean"] == pytest.approx(0.61)
    assert rows.loc[16, "isolated_mean"] == pytest.approx(0.71)
    assert rows.loc[8, "averaged_mean"] == pytest.approx(0.56)
    assert rows.loc[16, "averaged_mean"] == pytest.approx(0.56)
    assert rows.loc[8, "best_nuisance"] == "train.lr=0.3"
    assert rows.loc[16, "best_nuisance"] == "train.lr=0.1"
    assert rows["candidates"].tolist() == [2, 2]
    assert rows["combinations"].tolist() == [1, 1]
    assert rows["n"].tolist() == [2, 2]
    # two seeds: too few for an interval (min_seeds 3) and to hold seeds out
    assert rows["isolated_ci_low"].isna().all() and rows["heldout_mean"].isna().all()
    # seed SD 0.01414 in every cell: 1/√π × 0.01414 / √2
    assert rows.loc[8, "null_bias"] == pytest.approx(0.01 / math.sqrt(math.pi))
    assert rows["shown"].tolist() == ["isolated", "isolated"]
    assert "optimistic" in rows.loc[8, "why"]


def test_a_loss_keeps_the_lowest_setting():
    final = _final({(8, 0.1): [0.5, 0.6], (8, 0.3): [0.3, 0.4], (16, 0.1): [0.2, 0.3]})
    table = isolation_table(final, (*FACTORS, "train.lr"), ["train.lr"], "val_loss")
    rows = table.set_index("level")
    assert rows.loc[8, "best_nuisance"] == "train.lr=0.3"
    assert rows.loc[8, "isolated_mean"] == pytest.approx(0.35)
    # batch 16 was trained at one lr: nothing to choose, no bias
    assert rows.loc[16, "candidates"] == 1 and rows.loc[16, "null_bias"] == 0.0
    assert rows.loc[16, "shown"] == "averaged"


def test_winners_that_differ_between_combinations_are_counted():
    final = _final({(8, 0.1): [0.5, 0.5], (8, 0.3): [0.6, 0.6], (16, 0.1): [0.5, 0.5]})
    bigger = final.assign(
        image_size=128, cell_id=final["cell_id"] + "_img128",
        final=final["final"].where(final["train.lr"] == 0.3, 0.9),
    )  # fmt: skip
    table = isolation_table(pd.concat([final, bigger]), (*FACTORS, "train.lr"), ["train.lr"])
    batch = table[table["factor"] == "batch_size"].set_index("level")
    # batch 8: lr 0.3 wins at image size 64 (0.6 > 0.5), lr 0.1 at 128 (0.9 > 0.6)
    assert batch.loc[8, "best_nuisance"] == "train.lr=0.3 (1 of 2); train.lr=0.1 (1 of 2)"
    assert batch.loc[8, "isolated_mean"] == pytest.approx((0.6 + 0.9) / 2)
    assert batch.loc[8, "combinations"] == 2


def test_expected_max_of_normals():
    assert expected_max(1) == 0.0
    assert expected_max(2) == pytest.approx(1 / math.sqrt(math.pi))
    assert expected_max(3) == pytest.approx(3 / (2 * math.sqrt(math.pi)))


def _null(rng, seeds: int, sd: float) -> pd.DataFrame:
    return _final(
        {(b, lr): list(0.7 + rng.normal(0, sd, seeds)) for b in (8, 16) for lr in (1, 2, 3)}
    )


@pytest.mark.parametrize("seeds", [3, 4])
def test_under_a_null_isolated_exceeds_averaged_by_the_stated_bias(seeds):
    """No lr effect: the in-sample isolated value overshoots the average by null_bias
    (E[max of 3] × SD / √seeds = 0.846 × 0.02 / √seeds); the held-out value does not."""
    rng = np.random.default_rng(1)
    sd, reps = 0.02, 200
    excess, stated, heldout = [], [], []
    for _ in range(reps):
        table = isolation_table(_null(rng, seeds, sd), (*FACTORS, "train.lr"), ["train.lr"])
        excess += list(table["isolated_mean"] - table["averaged_mean"])
        stated += list(table["null_bias"])
        heldout += list(table["heldout_mean"] - table["averaged_mean"])
    truth = expected_max(3) * sd / math.sqrt(seeds)
    assert np.mean(excess) == pytest.approx(truth, rel=0.1)
    assert np.mean(stated) == pytest.approx(truth, rel=0.1)
    if seeds >= 4:
        assert abs(np.mean(heldout)) < 0.15 * truth
    else:
        assert np.isnan(heldout).all()


def test_planted_lr_per_batch_ranks_batch_sizes_where_the_average_does_not(tmp_path):
    data = load(_lr_study(tmp_path, _planted))
    table = get_isolation_info(data)
    batch = table[table["factor"] == "batch_size"].set_index("level")
    assert batch["best_nuisance"].to_dict() == {
        8: "train.lr=0.0001",
        16: "train.lr=0.001",
        32: "train.lr=0.01",
    }
    assert batch["isolated_mean"].sort_values(ascending=False).index.tolist() == [32, 16, 8]
    assert batch["averaged_mean"].sort_values(ascending=False).index.tolist() == [16, 32, 8]
    assert batch["combinations"].tolist() == [2, 2, 2]  # the two image sizes
    # lr is nuisance, never a row; image size is scientific
    assert set(table["factor"]) == {"batch_size", "image_size"}
    sentences = isolation_sentences(table, "val_iou")
    assert sentences[0].startswith("Shown: each level at its best train.lr (isolated)")
    on_batch = next(s for s in sentences if s.startswith("batch_size"))
    assert "32 ranks first" in on_batch and "averaged over the settings 16 ranks first" in on_batch
    fig = get_isolation_plot(table, "val_iou")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2


def test_held_out_seeds_are_shown_with_four_seeds(tmp_path):
    table = get_isolation_info(load(_lr_study(tmp_path, _planted, seeds=4)))
    assert set(table["shown"]) == {"held-out"}
    batch = table[table["factor"] == "batch_size"].set_index("level")
    # the planted gaps (0.02) dwarf the noise: the halves choose the same lrs
    assert batch["heldout_mean"].sort_values(ascending=False).index.tolist() == [32, 16, 8]
    assert batch["heldout_ci_low"].notna().all()
    assert isolation_sentences(table, "val_iou")[0].startswith(
        "Shown: each level at its best train.lr, chosen on half the seeds"
    )
    fig = get_isolation_plot(table, "val_iou")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["averaged", "isolated (in-sample)", "isolated (held-out seeds)"]


def test_report_has_the_section_and_table_only_with_nuisance(tmp_path):
    with_nuisance = write_report(_lr_study(tmp_path / "a", _planted), overlays=False)
    html = Path(with_nuisance.html_path).read_text()
    assert "Isolation over nuisance settings" in html
    assert "isolation" in with_nuisance.plots
    csv = pd.read_csv(with_nuisance.tables["isolation"])
    assert list(csv.columns) == ISOLATION_COLUMNS
    assert csv[csv["factor"] == "batch_size"]["best_nuisance"].tolist() == [
        "train.lr=0.0001", "train.lr=0.001", "train.lr=0.01"
    ]  # fmt: skip

    without = write_report(_lr_study(tmp_path / "b", _planted, nuisance=False), overlays=False)
    assert "Isolation over nuisance settings" not in Path(without.html_path).read_text()
    assert "isolation" not in without.tables and "isolation" not in without.plots
    assert sorted(without.tables) == sorted(set(with_nuisance.tables) - {"isolation"})
