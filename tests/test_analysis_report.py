import base64
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.report import write_report
from analysis.synthetic import synthetic_tables, write_synthetic_run

TABLES = ["cells", "anova", "plateau", "overfitting", "pareto", "scaling"]
PLOTS = ["interactions", "heatmaps", "learning_curves_iou", "learning_curves_loss", "pareto"]


def _fake_predict(run_dir: Path, run_id: str, max_images: int = 4):
    image = np.full((16, 16, 3), 90, dtype=np.uint8)
    truth = np.zeros((16, 16), dtype=bool)
    truth[4:12, 4:12] = True
    return [(image, truth, np.roll(truth, 2, axis=1))] * min(max_images, 2)


@pytest.fixture
def fake_predict(monkeypatch):
    module = types.ModuleType("gridrun.predict")
    module.predict_examples = _fake_predict
    monkeypatch.setitem(sys.modules, "gridrun.predict", module)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    trials, curves = synthetic_tables(
        image_sizes=(64, 128), dataset_sizes=(100, 400), epochs=(20,), batch_sizes=(8, 16), seeds=2
    )
    trials.loc[0, ["status", "error", "final_val_iou"]] = ["failed", "boom", np.nan]
    trials.loc[1, ["status", "error"]] = ["diverged", "loss is NaN"]
    trials.loc[2, ["status", "error"]] = ["infeasible", "CUDA out of memory"]
    # one trial still running: no trial row, 7 epochs of curves
    running = trials.loc[3, "run_id"]
    trials = trials.drop(index=3)
    curves = curves[(curves["run_id"] != running) | (curves["epoch"] <= 7)]
    return write_synthetic_run(tmp_path / "run", trials, curves)


def _images(html: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]+)"', html)


def test_full_report_writes_every_table_plot_and_resolvable_image(run_dir, fake_predict):
    report = write_report(run_dir)
    out = run_dir / "report"
    assert report.html_path == out / "index.html"
    for name in TABLES:
        assert (out / "tables" / f"{name}.csv").is_file()
    for name in [*PLOTS, "overlay_best", "overlay_worst"]:
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = report.html_path.read_text()
    images = _images(html)
    assert len(images) == len(PLOTS) + 2
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert "http://" not in html and "https://" not in html
    for status in ("failed", "diverged", "infeasible", "boom"):
        assert status in html
    assert any("3 trials left out of the fits" in f for f in report.findings)
    assert any("1 trials still running" in f for f in report.findings)
    assert any(f.startswith("best cell: ") for f in report.findings)
    cells = pd.read_csv(out / "tables" / "cells.csv")
    assert cells["n"].sum() == 16 - 4
    anova = pd.read_csv(out / "tables" / "anova.csv")
    assert list(anova.columns) == [
        "term",
        "df",
        "sum_sq",
        "F",
        "p_value",
        "partial_eta_sq",
        "omega_sq",
    ]
    assert anova.set_index("term").loc["image_size:batch_size", "p_value"] < 0.01
    assert len(pd.read_csv(out / "tables" / "plateau.csv")) == 12


def test_overlays_skipped_with_a_note_without_checkpoints(run_dir, monkeypatch):
    def no_checkpoint(run_dir: Path, run_id: str, max_images: int = 4):
        raise FileNotFoundError(f"{run_id}/checkpoint.pt")

    module = types.ModuleType("gridrun.predict")
    module.predict_examples = no_checkpoint
    monkeypatch.setitem(sys.modules, "gridrun.predict", module)
    report = write_report(run_dir, metric="val_dice")
    assert "overlay_best" not in report.plots
    assert "checkpoint.pt" in report.html_path.read_text()
    assert len(report.notes) == 2


def test_report_on_trials_table_alone(tmp_path: Path, fake_predict):
    trials = pd.DataFrame(
        {
            "cell_id": ["a", "a", "b", "b"],
            "seed": [0, 1, 0, 1],
            "image_size": [64, 64, 128, 128],
            "dataset_size": 100,
            "epochs": 5,
            "batch_size": 4,
            "status": "ok",
            "final_val_iou": [0.5, 0.6, 0.7, 0.72],
        }
    )
    trials.to_parquet(tmp_path / "trials.parquet")
    report = write_report(tmp_path)
    for name in TABLES:
        assert (tmp_path / "report" / "tables" / f"{name}.csv").is_file()
    html = report.html_path.read_text()
    assert "curves.parquet is missing" in html
    assert "Pareto plot is skipped" in html
    assert len(_images(html)) == 0  # costs unknown; overlays skipped: no run_id
    assert "interactions" not in report.plots  # a single varying factor


def test_analysis_never_imports_ray():
    code = "import sys, analysis.report; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
