import numpy as np
import pandas as pd
import pytest

from analysis.cells import cells_table
from analysis.findings import curves_by_cell
from analysis.interactions import get_interaction_info
from analysis.main_effects import get_main_effects_info, main_effects_table
from analysis.parallel import get_parallel_info
from analysis.params import Params
from analysis.pareto import pareto_mask, pareto_table
from analysis.scaling import PowerLaw, doubling_threshold, fit_power_law, scaling_table
from analysis.stats import mean_interval


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


def test_cells_table_summarises_seeds_best_first():
    final = _final({(64, 100): [0.5, 0.6, 0.7], (128, 100): [0.8, 0.8, 0.8], (256, 100): [0.9]})
    cells = cells_table(final)
    assert list(cells["cell_id"]) == ["c2", "c1", "c0"]
    row = cells.iloc[2]
    assert row["n"] == 3
    assert row["final_mean"] == pytest.approx(0.6)
    assert row["final_std"] == pytest.approx(0.1)
    assert (row["final_ci_low"], row["final_ci_high"]) == pytest.approx(
        mean_interval([0.5, 0.6, 0.7], bounds=(0.0, 1.0))[1:]
    )
    assert row["best_mean"] == pytest.approx(0.61)
    assert np.isnan(cells.iloc[0]["final_ci_low"])  # one seed: no interval
    assert list(cells_table(final, "val_loss")["cell_id"]) == ["c0", "c1", "c2"]


def test_pareto_mask_keeps_only_undominated_points():
    cost = np.array([1.0, 2.0, 3.0, 3.0, 4.0, np.nan])
    score = np.array([0.5, 0.4, 0.7, 0.6, 0.7, 0.9])
    assert list(pareto_mask(cost, score)) == [True, False, True, False, False, False]
    assert list(pareto_mask(cost, score, higher_better=False)) == [
        True, True, False, False, False, False,
    ]  # fmt: skip


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


def test_scaling_needs_three_sizes_and_reports_fit_quality():
    sizes = [100, 200, 400, 800]
    two = {(128, n): [1 - 0.6 * n**-0.25] for n in (100, 200)}
    final = _final({(64, n): [1 - 0.6 * n**-0.25] for n in sizes} | two)
    table = scaling_table(cells_table(final))
    assert list(table["image_size"]) == [64]  # two sizes never make a fit
    row = table.iloc[0]
    assert row["exponent"] == pytest.approx(0.25)
    assert row["r2"] == pytest.approx(1.0)
    assert row["rmse"] == pytest.approx(0.0, abs=1e-12)
    assert row["n_sizes"] == 4
    law = PowerLaw(0.6, 0.25, 1.0)
    assert row["gain_last_doubling"] == pytest.approx(law.error(400) - law.error(800))


@pytest.mark.parametrize(
    ("coefficient", "where"),
    [(0.9, "beyond range"), (0.3, "below range"), (0.6, "in range")],
)
def test_doubling_threshold_is_given_only_inside_the_measured_sizes(coefficient, where):
    sizes = [100, 200, 400, 800]
    final = _final({(64, n): [1 - coefficient * n**-0.5] for n in sizes})
    row = scaling_table(cells_table(final)).iloc[0]
    assert row["threshold"] == where
    threshold = doubling_threshold(PowerLaw(coefficient, 0.5, 1.0))
    if where == "in range":
        assert 100 <= threshold <= 400
        assert row["doubling_below_1pt_at"] == pytest.approx(threshold)
    else:
        assert np.isnan(row["doubling_below_1pt_at"])


def test_scaling_reads_its_gain_from_params():
    sizes = [100, 200, 400, 800]
    final = _final({(64, n): [1 - 0.6 * n**-0.5] for n in sizes})
    coarse = scaling_table(cells_table(final), Params(scaling_gain=0.02)).iloc[0]
    # 0.6·n^(−½)·(1 − 2^(−½)) = 0.02 at n ≈ 77.2, below the smallest size
    assert doubling_threshold(PowerLaw(0.6, 0.5, 1.0), 0.02) == pytest.approx(77.2, abs=0.1)
    assert coarse["threshold"] == "below range"
    assert scaling_table(cells_table(final)).iloc[0]["threshold"] == "in range"


def test_interaction_info_means_and_intervals_over_seeds():
    final = _final(
        {
            (64, 100): [0.5, 0.6, 0.55],
            (64, 200): [0.6, 0.7, 0.65],
            (128, 100): [0.7, 0.7, 0.7],
            (128, 200): [0.9, 0.8, 0.85],
        }
    )
    (pair,) = get_interaction_info(final)
    assert (pair.x, pair.hue) == ("image_size", "dataset_size")
    t = pair.table.set_index(["image_size", "dataset_size"])
    assert t.loc[(128, 200), "mean"] == pytest.approx(0.85)
    assert t.loc[(128, 200), "n"] == 3
    assert (t.loc[(128, 200), "ci_low"], t.loc[(128, 200), "ci_high"]) == pytest.approx(
        mean_interval([0.9, 0.8, 0.85], bounds=(0.0, 1.0))[1:]
    )
    assert pair.heatmap().loc[200, 64] == pytest.approx(0.65)


def test_main_effects_cover_varying_factors_and_show_seeds_without_intervals():
    final = _final({(64, 100): [0.5, 0.6], (128, 100): [0.7, 0.8]})
    info = get_main_effects_info(final)
    infos = {i.factor: i for i in info}
    # a factor with one level gets no panel; it is named with its level instead
    assert list(infos) == ["image_size"]
    assert list(info.single_level) == ["dataset_size", "epochs", "batch_size"]
    image = infos["image_size"]
    assert image.table.set_index("image_size")["mean"].to_dict() == pytest.approx(
        {64: 0.55, 128: 0.75}
    )
    assert image.table["ci_low"].isna().all()  # two seeds: points, no interval
    assert len(image.seeds) == 4
    long = main_effects_table(final)
    assert len(long) == 2
    assert long.loc[long["factor"] == "image_size", "level"].tolist() == [64, 128]


def test_parallel_info_positions_levels_and_metric():
    final = _final({(64, 100): [0.5], (128, 100): [0.7], (128, 200): [0.9]})
    info = get_parallel_info(cells_table(final), "val_iou")
    assert info.axes == ["image_size", "dataset_size", "epochs", "batch_size", "val_iou"]
    # drawn worst first: c0 (0.5), c1 (0.7), c2 (0.9)
    np.testing.assert_allclose(
        info.positions,
        [[0, 0, 0.5, 0.5, 0.0], [1, 0, 0.5, 0.5, 0.5], [1, 1, 0.5, 0.5, 1.0]],
    )
    assert info.values.tolist() == pytest.approx([0.5, 0.7, 0.9])
    assert info.ticks[0] == [(0.0, "64"), (1.0, "128")]


def test_curves_by_cell_summarises_seeds():
    plateau = pd.DataFrame(
        {
            "cell_id": ["a", "a", "b"],
            "plateau_epoch": pd.array([10, None, 20], dtype="Int64"),
            # seed 2 of "a": its run plateaus at 30, after the cell's epoch
            "run_plateau_epoch": pd.array([10, 30, 20], dtype="Int64"),
            "gain_after_trial": [0.0, 0.2, np.nan],
            "stuck_epochs": [0, 3, 0],
        }
    )
    over = pd.DataFrame(
        {
            "cell_id": ["a", "a", "b"],
            "overfit_epoch": pd.array([None, None, 30], dtype="Int64"),
            "unconfirmed_onset_epoch": pd.array([None, 19, None], dtype="Int64"),
            "transient_rises": [1, 2, 0],
            "best_minus_last": [0.0, 0.02, 0.04],
        }
    )
    table = curves_by_cell(plateau, over).set_index("cell_id")
    assert table.loc["a", "seeds"] == 2 and table.loc["a", "plateaued"] == 1
    assert table.loc["a", "plateau_epoch"] == 10
    assert table.loc["a", "plateaus_later"] == 1 and table.loc["b", "plateaus_later"] == 0
    assert table.loc["a", "gain_after_trial"] == pytest.approx(0.1)
    assert table.loc["a", "stuck_epochs"] == 3
    assert table.loc["a", "overfit"] == 0 and np.isnan(table.loc["a", "overfit_epoch"])
    assert table.loc["a", "unconfirmed"] == 1 and table.loc["b", "unconfirmed"] == 0
    assert table.loc["a", "transient_rises"] == 3
    assert table.loc["b", "overfit_epoch"] == 30
    assert table.loc["a", "best_minus_last"] == pytest.approx(0.01)
