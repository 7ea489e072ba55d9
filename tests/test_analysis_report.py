import base64
import io
import re
import subprocess
import sys
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.findings import compute_tables
from analysis.interactions import get_interaction_info
from analysis.load import load
from analysis.main_effects import get_main_effects_info
from analysis.params import Params
from analysis.report import write_report
from analysis.summary import lead_count, summarize
from analysis.synthetic import example_grid, synthetic_tables, write_synthetic_run
from gridrun.storage import Storage

TABLES = [
    "recommendations", "claims", "cells", "collapse", "anova", "importance", "main_effects",
    "batch", "batch_differences", "critical_batch", "plateau", "overfitting", "curves_by_cell",
    "edges", "pareto", "scaling",
]  # fmt: skip
PLOTS = [
    "importance", "main_effects", "interactions", "heatmaps", "parallel", "batch_steps",
    "learning_curves_metric", "learning_curves_loss", "pareto", "overlays",
]  # fmt: skip


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    trials, curves = synthetic_tables(
        image_sizes=(64, 128), dataset_sizes=(100, 200, 400), epochs=(20,), batch_sizes=(8, 16)
    )
    trials.loc[0, ["status", "error", "final_val_iou"]] = ["failed", "boom", np.nan]
    trials.loc[1, ["status", "error"]] = ["diverged", "loss is NaN"]
    trials.loc[2, ["status", "error"]] = ["infeasible", "CUDA out of memory"]
    # one trial still running: no trial row, 7 epochs of curves
    running = trials.loc[3, "run_id"]
    trials = trials.drop(index=3)
    curves = curves[(curves["run_id"] != running) | (curves["epoch"] <= 7)]
    grid = example_grid(trials, name="planted")
    return write_synthetic_run(tmp_path / "run", trials, curves, grid, examples=2, size=16)


def _images(html: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]+)"', html)


def test_full_report_writes_every_table_plot_and_a_readable_page(run_dir):
    (run_dir / "report" / "plots").mkdir(parents=True)
    (run_dir / "report" / "plots" / "stale.png").write_bytes(b"old")
    report = write_report(run_dir)
    out = run_dir / "report"
    assert report.html_path == out / "index.html"
    assert sorted(report.tables) == sorted(TABLES)
    assert sorted(report.plots) == sorted(PLOTS)
    for name in PLOTS:
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "plots" / "stale.png").exists()
    html = report.html_path.read_text()
    images = _images(html)
    assert len(images) == len(PLOTS)
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert "http://" not in html and "https://" not in html and "<script" not in html

    # header, contents, findings first
    assert "<h1>gridrun report: planted</h1>" in html
    for fact in ("<dt>data</dt><dd>synthetic, binary</dd>", "<dt>trials</dt><dd>32 ok, "):
        assert fact in html
    assert re.search(r"<dt>trials</dt><dd>[^<]*1 failed[^<]*, 1 running</dd>", html)
    for anchor in ("findings", "recommendations", "factors", "curves", "cells", "predictions"):
        assert f'href="#{anchor}"' in html
        assert f"id='{anchor}'" in html or f'id="{anchor}"' in html
    assert (
        html.index("id='findings'")
        < html.index('id="recommendations"')
        < html.index('id="factors"')
    )
    assert report.findings[0].startswith("Image size 64: ")
    assert report.findings[1].startswith("Image size 128: ")
    for sentence in report.findings[:2]:
        assert escape(sentence) in html

    # the rules are stated, from the parameters that made the tables
    params = Params()
    for rule in (params.plateau_rule("val_iou"), params.onset_rule(), params.interval_rule()):
        assert escape(rule) in html
    # the excluded trials' own rows (status and error), not the section's fixed paragraph
    excluded = html[html.index('<section id="excluded">') :]
    excluded = excluded[: excluded.index("</section>")]
    for cell in ("failed", "diverged", "infeasible", "boom", "loss is NaN", "CUDA out of memory"):
        assert f"<td>{cell}</td>" in excluded
    assert any("3 trials left out of the fits" in f for f in report.findings)
    assert any("1 trials still running" in f for f in report.findings)

    cells = pd.read_csv(out / "tables" / "cells.csv")
    assert cells["n"].sum() == 36 - 4
    recommendations = pd.read_csv(out / "tables" / "recommendations.csv")
    assert list(recommendations.columns) == [
        "image_size", "by", "cell_id", "dataset_size", "epochs", "batch_size", "n", "mean",
        "ci_low", "ci_high", "best_cell_id", "best_mean", "gap", "p_worse", "cost", "best_cost",
        "cost_ratio", "qualifying", "cells", "separable",
    ]  # fmt: skip
    assert sorted(set(recommendations["image_size"])) == [64, 128]
    anova = pd.read_csv(out / "tables" / "anova.csv")
    assert anova.set_index("term").loc["image_size:batch_size", "p_value"] < 0.01
    assert len(pd.read_csv(out / "tables" / "plateau.csv")) == 32
    assert "transient_rises" in pd.read_csv(out / "tables" / "overfitting.csv").columns


def _near_edges(seeds: int) -> pd.DataFrame:
    """Cells whose IoU sits near 1 and near 0 with a spread that a t interval overshoots."""
    rows = []
    for cell, (image, centre) in enumerate([(64, 0.985), (64, 0.99), (128, 0.012), (128, 0.3)]):
        for seed in range(seeds):
            value = centre + (0.012 if centre > 0.5 else 0.01) * (seed - 1)
            rows.append(
                {"cell_id": f"c{cell}", "seed": seed, "image_size": image, "dataset_size": 10,
                 "epochs": 5, "batch_size": 2 + cell % 2, "status": "ok",
                 "final_val_iou": min(value, 1.0), "train_time_s": 1.0 + cell, "steps": 10}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_no_interval_in_any_table_or_plot_leaves_the_unit_range(tmp_path: Path):
    trials = _near_edges(seeds=3)
    seeds = trials[trials["cell_id"] == "c1"]["final_val_iou"]
    t_high = seeds.mean() + stats.t.ppf(0.975, 2) * seeds.std() / np.sqrt(3)
    assert t_high > 1  # the study is one where the old t interval left [0, 1]
    trials.to_parquet(tmp_path / "trials.parquet")
    report = write_report(tmp_path, overlays=False)
    checked = 0
    for name, path in report.tables.items():
        table = pd.read_csv(path)
        for col in [c for c in table.columns if c.endswith(("ci_low", "ci_high"))]:
            if name != "importance":  # ω² is a share of variance, not the metric
                values = table[col].dropna()
                assert ((values >= 0) & (values <= 1)).all(), (name, col)
                checked += len(values)
    assert checked > 0
    final = load(tmp_path).final
    for info in [*get_interaction_info(final), *get_main_effects_info(final)]:
        assert info.table["ci_low"].min() >= 0 and info.table["ci_high"].max() <= 1


def test_fewer_than_three_seeds_show_points_and_say_why(tmp_path: Path):
    _near_edges(seeds=2).to_parquet(tmp_path / "trials.parquet")
    report = write_report(tmp_path, overlays=False)
    assert any(
        "have fewer than 3 seeds: no interval is drawn" in f and "seeds as points" in f
        for f in report.findings
    )
    cells = pd.read_csv(report.tables["cells"])
    assert cells["final_ci_low"].isna().all()
    assert "main_effects" in report.plots


def test_report_goes_to_a_local_directory_when_asked(run_dir, tmp_path):
    report = write_report(run_dir, overlays=False, to=tmp_path / "elsewhere")
    assert report.html_path == tmp_path / "elsewhere" / "index.html"
    assert (tmp_path / "elsewhere" / "tables" / "cells.csv").is_file()
    assert not (run_dir / "report").exists()
    assert any("not requested" in n for n in report.notes)


def test_study_on_s3_is_read_and_reported_through_storage(s3_uri, tmp_path):
    trials, curves = synthetic_tables(
        image_sizes=(32, 64), dataset_sizes=(100, 200), epochs=(6,), batch_sizes=(8,), seeds=2
    )
    for where in (s3_uri, tmp_path / "run"):
        write_synthetic_run(where, trials, curves, example_grid(trials), examples=2, size=16)
    study = Storage(s3_uri)
    study.write_bytes("report/plots/stale.png", b"old")
    assert load(s3_uri).name == s3_uri.rsplit("/", 1)[-1]
    assert len(load(Path(s3_uri)).trials) == 8  # a Path that swallowed the "//" still works

    report = write_report(s3_uri)
    assert report.html_path == f"{s3_uri}/report/index.html"
    assert report.tables["cells"] == f"{s3_uri}/report/tables/cells.csv"
    assert study.read_text("report/index.html").startswith("<!DOCTYPE html>")
    assert "overlays" in report.plots  # the prediction files were read from S3 too
    assert not study.exists("report/plots/stale.png")
    # the same study, local, reported to a URI: the same table
    there = write_report(tmp_path / "run", overlays=False, to=f"{s3_uri}/elsewhere")
    assert there.tables["cells"] == f"{s3_uri}/elsewhere/tables/cells.csv"
    cells = study.read_bytes("report/tables/cells.csv")
    assert study.read_bytes("elsewhere/tables/cells.csv") == cells
    assert len(pd.read_csv(io.BytesIO(cells))) == 4
    assert not (tmp_path / "run" / "report").exists()


def test_report_on_trials_table_alone(tmp_path: Path, monkeypatch):
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
    monkeypatch.chdir(tmp_path.parent)
    report = write_report(tmp_path.name)
    # the paths printed are spelled as the study was given
    assert report.html_path == Path(tmp_path.name, "report", "index.html")
    for name in TABLES:
        assert (tmp_path / "report" / "tables" / f"{name}.csv").is_file()
    html = report.html_path.read_text()
    assert "curves.parquet is missing" in html
    assert "Pareto plot is skipped" in html
    assert "no predictions/examples.npz" in html
    assert "interactions" not in report.plots  # a single varying factor
    assert any(f.startswith("No data-scaling fit: it needs ≥ 3") for f in report.findings)


def test_analysis_imports_only_the_layout_of_gridrun_and_never_ray_or_torch():
    # note: gridrun.claims (pydantic only) is the claim language the grid file and the
    # report share; gridrun.painting (numpy only) paints overlays for both
    code = (
        "import sys, analysis, analysis.claims; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')"
        " or (m.startswith('gridrun') and m not in "
        "('gridrun', 'gridrun.layout', 'gridrun.claims', 'gridrun.painting'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_many_image_sizes_keep_the_first_screen_short(tmp_path: Path):
    trials, curves = synthetic_tables(
        image_sizes=(32, 64, 96, 128, 160, 192), dataset_sizes=(100,), epochs=(10,), seeds=3
    )
    data = load(write_synthetic_run(tmp_path, trials, curves))
    tables = compute_tables(data)
    findings = summarize(data, tables)
    assert lead_count(tables) == 4
    assert all(f.startswith("Image size ") for f in findings[:3])
    assert findings[3] == "The other 3 image sizes: see the Recommendations table."
    # the three shown are those whose best cells score highest
    best = tables.recommendations.groupby("image_size")["best_mean"].first()
    shown = [int(f.split()[2].rstrip(":")) for f in findings[:3]]
    assert sorted(shown) == sorted(best.nlargest(3).index)


def test_file_uri_through_the_real_storage_is_a_local_study(run_dir):
    pytest.importorskip("gridrun.storage")
    report = write_report(run_dir.as_uri(), overlays=False)
    assert report.html_path == run_dir / "report" / "index.html"
    assert report.html_path.is_file()


def test_a_text_setting_as_a_factor_is_analysed_and_reported(tmp_path: Path):
    extra = {"model.encoder": ("resnet18", "resnet34"), "train.lr": (3e-4, 1e-3, 3e-3)}
    trials, curves = synthetic_tables(
        image_sizes=(64, 128), dataset_sizes=(100,), epochs=(10, 20), batch_sizes=(8, 16),
        seeds=3, extra=extra, effects={"model.encoder": (0.05, 0.0), "train.lr": (0.0, 0.04)},
    )  # fmt: skip
    grid = example_grid(trials, name="recipe", extra=extra)
    run = write_synthetic_run(tmp_path / "run", trials, curves, grid, examples=2, size=16)
    data = load(run)
    tables = compute_tables(data)

    anova = tables.anova.set_index("term")
    assert anova.loc["model.encoder", "p_value"] < 1e-6
    assert anova.loc["batch_size:train.lr", "p_value"] < 1e-6
    assert anova.loc["batch_size:train.lr", "df"] == 2
    assert set(tables.cells["model.encoder"]) == {"resnet18", "resnet34"}
    assert list(tables.cells.columns[4:7]) == ["model.encoder", "train.lr", "cell_id"]
    effects = tables.main_effects[tables.main_effects["factor"] == "model.encoder"]
    means = effects.set_index("level")["mean"]
    assert means["resnet34"] - means["resnet18"] == pytest.approx(0.05, abs=0.01)
    pairs = {(p.x, p.hue) for p in get_interaction_info(data.final, factors=data.factors)}
    assert ("train.lr", "batch_size") in pairs and len(pairs) == 10  # 5 varying factors
    # an edge of a text factor is no place to extend the grid; lr's is
    assert set(tables.edges["factor"]) == {*data.factors} - {"model.encoder"}
    for name in ("plateau", "overfitting", "collapse", "recommendations"):
        assert {"model.encoder", "train.lr"} <= set(getattr(tables, name).columns), name

    report = write_report(run)
    cells = pd.read_csv(report.tables["cells"])
    assert sorted(cells["model.encoder"].unique()) == ["resnet18", "resnet34"]
    html = report.html_path.read_text()
    assert "model.encoder" in html and "batch_size:train.lr" in html
    assert "model.encoder resnet18, resnet34; train.lr 0.0003, 0.001, 0.003" in html  # header
    assert set(tables.batch["model.encoder"]) == {"resnet18", "resnet34"}  # batch groups
    assert set(PLOTS) <= set(report.plots)


def test_figures_drawn_in_forked_processes_are_the_figures_drawn_here(run_dir, tmp_path):
    # note: in a fresh interpreter, since the test process may hold a Ray connection
    code = f"""
import analysis.report as report
assert report._forkable()
report._cores = lambda: 2
forked = report.write_report({str(run_dir)!r}, to={str(tmp_path / "forked")!r})
report._forkable = lambda: False
here = report.write_report({str(run_dir)!r}, to={str(tmp_path / "here")!r})
assert list(forked.plots) == list(here.plots)
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    forked = sorted((tmp_path / "forked" / "plots").glob("*.png"))
    assert [p.name for p in forked] == sorted(f"{name}.png" for name in PLOTS)
    for png in forked:
        assert png.read_bytes() == (tmp_path / "here" / "plots" / png.name).read_bytes(), png
    html = (tmp_path / "forked" / "index.html").read_text()
    assert html == (tmp_path / "here" / "index.html").read_text()


def test_no_fork_in_a_ray_process(monkeypatch):
    import analysis.report as report

    class Ray:
        @staticmethod
        def is_initialized() -> bool:
            return True

    monkeypatch.setitem(sys.modules, "ray", Ray)
    assert not report._forkable()
    Ray.is_initialized = staticmethod(lambda: False)
    assert report._forkable() == (sys.platform != "darwin")
