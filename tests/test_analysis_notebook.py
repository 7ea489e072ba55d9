"""docs/notebook.ipynb runs headless against the study committed in docs/example-run."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

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


def test_notebook_executes_and_shows_the_example_study(tmp_path: Path):
    shutil.copy(DOCS / "notebook.ipynb", tmp_path)
    shutil.copytree(DOCS / "example-run", tmp_path / "example-run")
    nb = nbformat.read(tmp_path / "notebook.ipynb", as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    trials = pd.read_parquet(DOCS / "example-run" / "trials.parquet")
    cells = _outputs(nb, "cells")
    assert _text(cells) == f"{trials['cell_id'].nunique()} cells\n"
    (table,) = [o for o in cells if o.output_type == "execute_result"]
    assert table.data["text/html"].split("<tbody>")[1].count("<tr>") == 8  # head(8)
    sizes = sorted(trials["image_size"].unique())
    assert _text(_outputs(nb, "recommendations")).startswith(f"Image size {sizes[0]}: ")
    assert "image_size" in _outputs(nb, "importance")[0].data["text/plain"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 5
    assert _text(_outputs(nb, "report")).startswith("index.html ")
    assert not (DOCS / "example-run" / "report").exists()
