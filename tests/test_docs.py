"""The manual and the API reference build with every warning an error (``mkdocs build --strict``): the guides,
the tutorial notebook with its figures, and the reference generated from the docstrings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_api_reference_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="install the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings_handlers.python", reason="install the docs extra: pip install -e '.[docs]'")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    page = (site / "api" / "compare" / "index.html").read_text(encoding="utf-8")
    # the reference is generated from the docstrings, parameters included
    assert "Compare a teacher with its student" in page and "(model, tokenizer)" in page
    assert "silences them" in page  # the ``progress`` argument's own line
    # the tutorial notebook is a page of the site, its committed figures embedded
    tutorial = (site / "tutorial" / "index.html").read_text(encoding="utf-8")
    assert tutorial.count("data:image/png;base64") >= 4
    for guide in ("reading-the-report", "trust", "your-pair", "edges", "lab", "large-models", "performance",
                  "reproducing"):
        assert (site / guide / "index.html").is_file(), guide
