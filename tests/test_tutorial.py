"""docs/tutorial.ipynb runs from top to bottom on the built-in pair and draws its figures.

The committed notebook carries its outputs (the docs site shows them); this test executes a
fresh copy, so a change that breaks the tutorial fails here rather than on a reader's machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
FIGURES = 4  # influence, matching, EAP-IG against exact, the trajectory


def _figures(nb) -> int:  # noqa: ANN001  (an nbformat notebook)
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


def test_the_tutorial_runs_and_draws_its_figures(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat", reason="install the test extra: pip install -e '.[test]'")
    nbclient = pytest.importorskip("nbclient", reason="install the test extra: pip install -e '.[test]'")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert _figures(nb) == FIGURES, "commit the notebook with its outputs (see docs/development.md)"
    for cell in nb.cells:
        cell.outputs = [] if cell.cell_type == "code" else cell.get("outputs")
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"]
    assert not errors
    assert _figures(nb) == FIGURES
    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "alignment" in text and "eap-ig: all" in text
