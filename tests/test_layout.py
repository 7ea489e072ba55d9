"""gridrun.layout owns the study's schema: its ids round-trip, and no other module spells
a table file name, an id format, a column group or a status string."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from gridrun import layout
from gridrun.layout import Progress, Status, cell_id, parse_trial_id, training_run_id, trial_id

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gridrun", "analysis")

FILE_NAMES = (
    layout.GRID_FILE, layout.BASELINES_FILE, layout.TRIALS_FILE, layout.CURVES_FILE,
    layout.LOCK_FILE, layout.PROGRESS_FILE, layout.EXAMPLES_FILE.rsplit("/", 1)[-1],
)  # fmt: skip
STATUS_NAMES = {s.value for s in Status}
# pieces of the id formats and column groups as they appear in f-strings and literals
ID_PIECES = {"_s", "img", "_ep", "_bs", "final_", "best_"}
COLUMN_NAMES = {*layout.FINAL_COLUMNS, f"best_{layout.BEST_METRIC}", layout.TRIAL_ID}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        pieces: list[str] = []
        if isinstance(node, ast.JoinedStr):
            pieces = [v.value for v in node.values if isinstance(v, ast.Constant)]
            found += [f"{path.name}:{node.lineno}: f-string piece {p!r}" for p in pieces
                      if p in ID_PIECES or p.endswith(("_s", "final_"))]  # fmt: skip
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if id(node) in skip:
            continue
        text = node.value
        where = f"{path.name}:{node.lineno}"
        if text in STATUS_NAMES:
            found.append(f"{where}: status string {text!r}")
        if text in COLUMN_NAMES or text == "_s":
            found.append(f"{where}: schema literal {text!r}")
        found += [f"{where}: file name {name!r} in {text!r}" for name in FILE_NAMES if name in text]
    return sorted(set(found), key=lambda line: int(line.split(":")[1]))


@pytest.mark.parametrize("package", PACKAGES)
def test_only_layout_spells_file_names_ids_columns_and_statuses(package: str):
    offences = [
        line
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "gridrun" / "layout.py"
        for line in _offences(path)
    ]
    assert not offences, "\n".join(offences)


def test_the_check_sees_what_it_forbids(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""docs may say trials.parquet"""\n'
        'a = "ok"\nb = f"{c}_s{d}"\ne = x.rsplit("_s", 1)\nf = f"final_{m}"\n'
        'g = "cannot read curves.parquet"\n'
    )
    assert sorted({line.split(": ", 1)[0] for line in _offences(bad)}) == [
        "bad.py:2", "bad.py:3", "bad.py:4", "bad.py:5", "bad.py:6",
    ]  # fmt: skip


def test_ids_round_trip_and_name_training_runs_after_their_longest_cell():
    factors = {"image_size": 64, "dataset_size": 128, "epochs": 20, "batch_size": 4}
    cell = cell_id(factors)
    assert cell == "img64_n128_ep20_bs4"
    assert parse_trial_id(trial_id(cell, 12)) == (cell, 12)
    assert training_run_id(factors, 3) == "img64_n128_ep20_bs4_s3"
    extra = {**factors, "train.lr": 3e-4, "model.encoder": "resnet18"}
    assert cell_id(extra) == "img64_n128_ep20_bs4_model.encoder=resnet18_train.lr=0.0003"
    assert parse_trial_id(trial_id(cell_id(extra), 0)) == (cell_id(extra), 0)
    with pytest.raises(ValueError, match="not a trial id"):
        parse_trial_id("img64_n128_ep20_bs4")


def test_status_parse_accepts_the_four_names_only():
    assert [Status.parse(s) for s in ("ok", "diverged", "infeasible", "failed")] == list(Status)
    assert [s.final for s in Status] == [True, True, True, False]
    for bad in ("OK", "", None, math.nan):
        with pytest.raises(ValueError):
            Status.parse(bad)


def test_progress_round_trips_and_refuses_a_file_without_a_time():
    progress = Progress(1700000000.5, {"img64_n128_ep20_bs4_s0": 7})
    assert Progress.from_json(progress.to_json()) == progress
    with pytest.raises(KeyError):
        Progress.from_json('{"running": {}}')


def test_factor_names_put_the_four_first_then_settings_crossed_or_grouped():
    crossed = {"image_size": [64], "epochs": [5], "train.lr": [1e-3], "augment": ["none"]}
    assert layout.factor_names(crossed)[4:] == ("augment", "train.lr")
    grouped = {"image_size": [64], "grouped": [{"batch_size": 4, "train.lr": 3e-4}]}
    assert layout.factor_names(grouped) == (*layout.FACTORS, "train.lr")
    assert layout.factor_names(None) == layout.FACTORS
