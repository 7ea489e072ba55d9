import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.cells import cells_table, mean_ci
from analysis.interactions import get_interaction_info
from analysis.pareto import pareto_mask, pareto_table
from analysis.scaling import PowerLaw, doubling_threshold, fit_power_law, scaling_table


def _final(values: dict[tuple[int, int], list[float]]) -> pd.DataFrame:
    rows = []
    for i, ((image, data), vals) in enumerate(values.items()):
        for seed, v in enumerate(vals):
            rows.append(
                {
                    "cell_id": f"c{i}",
                    "seed": seed,
                    "image_size": image,
                    "dataset_size": data,
                    "epochs": 10,
                    "batch_size": 8,
                    "final": v,
                    "best": v + 0.01,
                    "best_epoch": 5,
                    "steps": 100,
                    "train_time_s": 10.0 * image,
                    "peak_mem_mb": float(data),
                }
            )
    return pd.DataFrame(rows)


def test_mean_ci_is_student_t():
    mean, lo, hi = mean_ci([0.5, 0.6, 0.7])
    half = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((0.6, 0.6 - half, 0.6 + half))
    assert np.isnan(mean_ci([0.5])[1])


def test_cells_table_summarises_seeds_best_first():
    final = _final({(64, 100): [0.5, 0.6, 0.7], (128, 100): [0.8, 0.8, 0.8]})
    cells = cells_table(final)
    assert list(cells["cell_id"]) == ["c1", "c0"]
    row = cells.iloc[1]
    assert row["n"] == 3
    assert row["final_mean"] == pytest.approx(0.6)
    assert row["final_std"] == pytest.approx(0.1)
    assert row["best_mean"] == pytest.approx(0.61)
    assert row["final_ci_low"] < 0.6 < row["final_ci_high"]
    assert list(cells_table(final, higher_better=False)["cell_id"]) == ["c0", "c1"]


def test_pareto_mask_keeps_only_undominated_points():
    cost = np.array([1.0, 2.0, 3.0, 3.0, 4.0, np.nan])
    score = np.array([0.5, 0.4, 0.7, 0.6, 0.7, 0.9])
    assert list(pareto_mask(cost, score)) == [True, False, True, False, False, False]
    assert list(pareto_mask(cost, score, higher_better=False)) == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]


def test_pareto_table_marks_each_frontier():
    final = _final({(64, 400): [0.6], (128, 100): [0.7], (128, 400): [0.65]})
    table = pareto_table(cells_table(final)).set_index("cell_id")
    # c0: cheapest in time; c1: best and cheapest in memory; c2 is dominated on both
    assert set(table.index) == {"c0", "c1"}
    assert table.loc["c0", "on_time_frontier"] and not table.loc["c0", "on_memory_frontier"]
    assert table.loc["c1", "on_time_frontier"] and table.loc["c1", "on_memory_frontier"]


def test_power_law_recovered_and_doubling_threshold():
    sizes = np.array([100.0, 200, 400, 800])
    law = fit_power_law(sizes, 0.5 * sizes**-0.3)
    assert law.exponent == pytest.approx(0.3)
    assert law.coefficient == pytest.approx(0.5)
    n = doubling_threshold(law)
    assert law.error(n) - law.error(2 * n) == pytest.approx(0.01)
    assert doubling_threshold(PowerLaw(0.5, -0.1, 1.0)) == 0.0


def test_scaling_table_fits_each_group_over_dataset_size():
    sizes = [100, 200, 400, 800]
    final = _final({(64, n): [1 - 0.6 * n**-0.25] for n in sizes} | {(128, 100): [0.7]})
    table = scaling_table(cells_table(final))
    assert len(table) == 1  # image 128 has a single data set size
    row = table.iloc[0]
    assert row["image_size"] == 64
    assert row["exponent"] == pytest.approx(0.25)
    assert row["r2"] == pytest.approx(1.0)
    assert row["n_sizes"] == 4


def test_interaction_info_means_and_ci_over_seeds():
    final = _final(
        {
            (64, 100): [0.5, 0.6],
            (64, 200): [0.6, 0.7],
            (128, 100): [0.7, 0.7],
            (128, 200): [0.9, 0.8],
        }
    )
    (pair,) = get_interaction_info(final)
    assert (pair.x, pair.hue) == ("image_size", "dataset_size")
    t = pair.table.set_index(["image_size", "dataset_size"])
    assert t.loc[(128, 200), "mean"] == pytest.approx(0.85)
    assert t.loc[(128, 200), "n_seeds"] == 2
    half = stats.t.ppf(0.975, 1) * np.std([0.9, 0.8], ddof=1) / np.sqrt(2)
    assert t.loc[(128, 200), "ci_high"] == pytest.approx(0.85 + half)
    assert pair.heatmap().loc[200, 64] == pytest.approx(0.65)
