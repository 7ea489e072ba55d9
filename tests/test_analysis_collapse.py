import numpy as np
import pandas as pd
import pytest
from helpers import binary_baselines

from analysis.baselines import Baselines
from analysis.collapse import collapse_by_cell, collapse_sentences, collapse_table, collapsed_curve
from analysis.params import Params

BASELINES = Baselines.from_dict(
    binary_baselines(
        128, 6, (23, 77), {"val_iou": 0.0, "val_miou": 0.115}, {"val_iou": 0.77, "val_miou": 0.384}
    )
)
TRIVIAL = BASELINES.scores("val_miou")


def _final(rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cell_id": [r[0] for r in rows],
            "seed": [r[1] for r in rows],
            "image_size": 128,
            "dataset_size": 12,
            "epochs": 8,
            "batch_size": 4,
            "training_run": [f"{r[0]}_s{r[1]}" for r in rows],
            "final": [r[2] for r in rows],
            "best": [r[2] for r in rows],
        }
    )


def test_collapsed_curve_flags_values_near_or_below_the_best_trivial_score():
    values = np.array([0.10, 0.115, 0.30, 0.384, 0.393, 0.396, 0.60, np.nan])
    flags = collapsed_curve(values, TRIVIAL, 0.01)
    # 0.10 and 0.30 are below the all-foreground 0.384; 0.393 is within 0.01 of it
    assert flags.tolist() == [True, True, True, True, True, False, False, False]


def test_collapsed_curve_for_a_lower_is_better_metric_and_without_scores():
    flags = collapsed_curve(np.array([0.6, 0.495, 0.4]), [0.5], 0.01, higher_better=False)
    assert flags.tolist() == [True, True, False]
    assert not collapsed_curve(np.array([0.0, 0.5]), {}, 0.01).any()


def test_collapse_table_names_the_nearest_trivial_predictor():
    final = _final([("a", 0, 0.384), ("a", 1, 0.3843), ("b", 0, 0.60), ("c", 0, 0.05)])
    table = collapse_table(final, BASELINES, "val_miou", Params())
    assert table["collapsed"].tolist() == [True, True, False, True]
    assert table["nearest_trivial"].tolist() == [
        "all foreground", "all foreground", "all foreground", "all background",
    ]  # fmt: skip
    assert table["trivial_score"].tolist() == pytest.approx([0.384, 0.384, 0.384, 0.115])
    # how far above the best trivial score (0.384), better positive
    assert table["above_trivial"].tolist() == pytest.approx([0.0, 0.0003, 0.216, -0.334])
    assert table["training_run"].tolist() == ["a_s0", "a_s1", "b_s0", "c_s0"]
    assert "note" not in table.attrs


def test_margin_comes_from_params():
    final = _final([("a", 0, 0.40)])
    assert not collapse_table(final, BASELINES, "val_miou", Params())["collapsed"].item()
    assert collapse_table(final, BASELINES, "val_miou", Params(collapse_margin=0.02))[
        "collapsed"
    ].item()
    rule = Params(collapse_margin=0.02).collapse_rule("val_miou")
    assert "val_miou ≤ best trivial score + 0.02" in rule


def test_no_baselines_or_a_loss_gives_an_empty_verdict_with_a_note():
    final = _final([("a", 0, 0.384), ("b", 0, 0.0)])
    none = collapse_table(final, None, "val_miou")
    assert not none["collapsed"].any()
    assert "baselines.json" in none.attrs["note"]
    loss = collapse_table(final, BASELINES, "val_loss")
    assert not loss["collapsed"].any()
    assert "a loss has no trivial-predictor score" in loss.attrs["note"]
    assert collapse_sentences(loss, "val_loss") == [loss.attrs["note"]]
    assert "not checked" in Params().collapse_rule("val_loss")


def test_collapse_by_cell_and_sentence_name_the_collapsed_cells():
    final = _final([("a", 0, 0.384), ("a", 1, 0.3843), ("b", 0, 0.60), ("c", 0, 0.05),
                    ("c", 1, 0.70)])  # fmt: skip
    table = collapse_table(final, BASELINES, "val_miou")
    by_cell = collapse_by_cell(table)
    assert by_cell["cell_id"].tolist() == ["a", "c"]
    assert by_cell["collapsed_seeds"].tolist() == [2, 1]
    assert by_cell["seeds"].tolist() == [2, 2]
    (sentence,) = collapse_sentences(table, "val_miou")
    assert sentence.startswith("3 of 5 trials are collapsed")
    assert "a (2/2 seeds, val_miou 0.384, all foreground)" in sentence
    assert "c (1/2 seeds, val_miou 0.050, all background)" in sentence
    assert "b (" not in sentence
