"""docs/notebook.ipynb runs headless against the study committed in docs/example-run, and
shows the numbers the report of that study holds."""

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import analysis

# note: nbclient, nbformat and ipykernel come with the test extra; without them the
# skip is reported (pytest -ra) rather than hidden
nbformat = pytest.importorskip("nbformat")
NotebookClient = pytest.importorskip("nbclient").NotebookClient
pytest.importorskip("ipykernel")

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _outputs(nb, tag: str) -> list:
    (cell,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return cell.outputs


def _text(outputs: list) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def _rows(outputs: list) -> list[list[str]]:
    """The body cells of the one DataFrame a notebook cell displays, as shown."""
    (table,) = [o for o in outputs if o.output_type == "execute_result"]
    body = table.data["text/html"].split("<tbody>")[1].split("</tbody>")[0]
    return [re.findall(r"<td>(.*?)</td>", row) for row in body.split("</tr>") if "<td>" in row]


def test_notebook_shows_the_numbers_of_the_example_studys_report(tmp_path: Path):
    shutil.copy(DOCS / "notebook.ipynb", tmp_path)
    shutil.copytree(DOCS / "example-run", tmp_path / "example-run")
    nb = nbformat.read(tmp_path / "notebook.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print(report.html_path.parent)"))
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    report = Path(_text(code[-1].outputs).strip())
    table = {
        name: pd.read_csv(report / "tables" / f"{name}.csv")
        for name in ("cells", "recommendations", "importance")
    }
    cells, recommendations = table["cells"], table["recommendations"]

    # the cells, best first, with the means and intervals the report's table holds
    assert _text(_outputs(nb, "cells")) == f"{len(cells)} cells\n"
    shown = _rows(_outputs(nb, "cells"))
    assert [r[0] for r in shown] == list(cells["cell_id"].head(8))
    for i, col in ((2, "final_mean"), (3, "final_ci_low"), (4, "final_ci_high")):
        assert [float(r[i]) for r in shown] == pytest.approx(list(cells[col].head(8)), abs=1e-6)
    # the report's recommended cells, and the sentences the library writes for them
    assert [r[2] for r in _rows(_outputs(nb, "recommendations"))] == list(
        recommendations["cell_id"]
    )
    run = analysis.load(tmp_path / "example-run")
    computed = analysis.recommendations_table(
        analysis.cells_table(run.final, run.metric), run.metric
    )
    sentences = analysis.recommendation_sentences(computed, run.metric)
    assert sentences[0].startswith("Image size 48: ")
    assert _text(_outputs(nb, "recommendations")) == "".join(f"{s}\n" for s in sentences)
    # factor importance: the report's terms and shares, in its order
    importance = _rows(_outputs(nb, "importance"))
    assert [r[0] for r in importance] == list(table["importance"]["term"])
    assert [float(r[1]) for r in importance] == pytest.approx(
        list(table["importance"]["omega_sq"]), abs=1e-6
    )
    # every plot_* cell draws one picture; the report cell names what it wrote
    plots = [c for c in code if c.source.startswith("analysis.plot_")]
    assert len(plots) == 5
    assert all(sum("image/png" in o.get("data", {}) for o in c.outputs) == 1 for c in plots)
    written = len(list((report / "plots").glob("*.png")))
    assert _text(_outputs(nb, "report")) == f"index.html {written} plots\n"
    assert written == 9
    assert not (DOCS / "example-run" / "report").exists()
