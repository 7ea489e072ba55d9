"""The claim language of the grid file: what a user writes, what errors they see, and what
each claim names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gridrun.claims import RULES_OF_THUMB, Claim, parse_claims
from gridrun.spec import GridError, load_grid, parse_grid

FACTORS = {"image_size": [32], "dataset_size": [8], "epochs": [1], "batch_size": [4]}

EXAMPLE = """\
factors: {image_size: [32], dataset_size: [8], epochs: [1], batch_size: [4]}
claims:
  - {name: "512 or 1024 px is better", factor: image_size, kind: better, levels: ">= 512"}
  - {name: "around 60-70 epochs", factor: epochs, kind: best_in, range: [60, 70]}
  - {name: "batch size 4 is optimal", factor: batch_size, kind: best_in, range: [4, 4]}
  - {name: "a large data set needs fewer epochs", factor: dataset_size, kind: trend,
     response: best_epoch, direction: decreases}
  - {name: "a bigger data set prevents overfitting", factor: dataset_size, kind: trend,
     response: train_val_gap, direction: decreases}
  - {name: "larger batches train faster", factor: batch_size, kind: trend,
     response: train_time_s, direction: decreases}
  - {factor: image_size, kind: better, levels: [96, 128]}
"""


def _error(claims) -> str:
    with pytest.raises(GridError) as info:
        parse_grid({"factors": FACTORS, "claims": claims})
    return str(info.value)


def test_the_six_rules_of_thumb_read_from_a_grid_file(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(EXAMPLE)
    grid = load_grid(path)
    assert [(c.factor, c.kind) for c in grid.claims[:6]] == [
        (c.factor, c.kind) for c in RULES_OF_THUMB
    ]
    assert grid.claims[1].range == (60, 70) and grid.claims[3].response == "best_epoch"
    # a claim without a name is described by what it says
    assert grid.claims[6].title == "image_size 96 or 128 is better"
    # the resolved grid the runner stores reads back as the same claims
    assert parse_grid(yaml.safe_load(grid.resolved_yaml())) == grid
    assert parse_grid({"factors": FACTORS}).claims == []


def test_rules_of_thumb_say_what_the_article_says() -> None:
    assert [c.title for c in RULES_OF_THUMB] == [
        "512 or 1024 px is better",
        "around 60–70 epochs",
        "a batch size of 4 is optimal",
        "with a large data set you need fewer epochs",
        "a bigger data set prevents overfitting",
        "larger batches train faster",
    ]
    image, epochs, batch, *_ = RULES_OF_THUMB
    assert [v for v in (256, 512, 1024) if image.claimed(v)] == [512, 1024]
    assert (image.levels_text(), epochs.range_text(), batch.range_text()) == ("≥ 512", "60–70", "4")


@pytest.mark.parametrize(
    ("levels", "claimed"),
    [(">= 512", [512, 1024]), ("> 512", [1024]), ("<= 256", [64, 256]), ("<256", [64]),
     ("512", [512]), ("== 512", [512]), ([64, 1024, 2048], [64, 1024])],
)  # fmt: skip
def test_levels_name_the_claimed_levels(levels, claimed: list[int]) -> None:
    claim = Claim(factor="image_size", kind="better", levels=levels)
    assert [v for v in (64, 256, 512, 1024) if claim.claimed(v)] == claimed


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        (
            {"factor": "epoch", "kind": "better", "levels": ">= 4"},
            "claims[0].factor: unknown factor 'epoch' (did you mean 'epochs'?); "
            "one of image_size, dataset_size, epochs, batch_size",
        ),
        ({"factor": "epochs", "kind": "better"}, "claims[0].levels: required for kind 'better'"),
        (
            {"factor": "epochs", "kind": "better", "levels": "about 60"},
            "claims[0].levels: 'about 60' is neither a list of levels nor a comparison "
            "such as '>= 512'",
        ),
        (
            {"factor": "epochs", "kind": "better", "levels": []},
            "claims[0].levels: needs at least one level",
        ),
        (
            {"factor": "epochs", "kind": "best_in", "range": [70, 60]},
            "claims[0].range: the low end 70 is above the high end 60",
        ),
        (
            {"factor": "epochs", "kind": "best_in", "range": [60, 70], "direction": "increases"},
            "claims[0].direction: only for kind 'trend', not 'best_in'",
        ),
        (
            {"factor": "epochs", "kind": "better", "levels": ">= 4", "range": [4, 8]},
            "claims[0].range: only for kind 'best_in', not 'better'",
        ),
        ({"factor": "epochs", "kind": "trend"}, "claims[0].direction: required for kind 'trend'"),
        (
            {"factor": "epochs", "kind": "trend", "direction": "increases", "respons": "steps"},
            "claims[0].respons: unknown key (did you mean 'response'?)",
        ),
        ({"factor": "epochs", "kind": "worse"}, "claims[0].kind: Input should be 'better'"),
    ],
)
def test_a_bad_claim_is_one_line_naming_its_dotted_key(claim: dict, message: str) -> None:
    text = _error([{"factor": "epochs", "kind": "best_in", "range": [1, 2]}, claim])
    assert text.startswith(f"grid: {message.replace('claims[0]', 'claims[1]')}")
    assert "\n" not in text


def test_two_claims_of_one_name_are_an_error() -> None:
    claim = {"factor": "epochs", "kind": "trend", "direction": "increases"}
    assert _error([claim, claim]) == (
        "grid: claims: two claims named 'metric increases with epochs' (claims[0] and "
        "claims[1]); give each its own name"
    )


def test_claims_must_be_a_list_of_mappings() -> None:
    assert _error("epochs matter") == "grid: claims: Input should be a valid list"
    assert _error([3]).startswith("grid: claims[0]: Input should be a valid dictionary")


def test_parse_claims_reads_an_absent_value_as_none() -> None:
    assert parse_claims(None) == []
    assert parse_claims([{"factor": "epochs", "kind": "best_in", "range": [8, 8]}]) == [
        Claim(factor="epochs", kind="best_in", range=(8, 8))
    ]
