"""Results as plain data: ``results.json`` plus Parquet tables for pandas.

Every file is written atomically (temporary file, then rename), so an interrupted run
never leaves a half-written result behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from circuitdiff.schema import Results, SchemaError, json_ready

RESULTS_JSON = "results.json"
COMPONENTS_TABLE = "components.parquet"
PER_PROMPT_TABLE = "effects_per_prompt.parquet"
SIMILARITY_TABLE = "similarity.parquet"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary sibling of ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(json_ready(data), indent=2, allow_nan=False)
    atomic_write(path, lambda p: p.write_text(text + "\n", encoding="utf-8"))


def write_table(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda p: frame.to_parquet(p, index=False))


def read_results(folder: str | Path) -> dict[str, Any]:
    """``results.json`` as plain JSON (what a user gets with ``json.load``)."""
    return json.loads((Path(folder) / RESULTS_JSON).read_text(encoding="utf-8"))


def load_results(folder: str | Path) -> Results:
    """``results.json`` checked against the schema and typed (older files upgraded, see ``circuitdiff.schema``)."""
    path = Path(folder) / RESULTS_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SchemaError(f"{path} is not valid JSON ({exc})") from None
    try:
        return Results.read(data)
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from None


def components_frame(results: dict[str, Any]) -> pd.DataFrame:
    """One row per model, task and component, from a results dict."""
    rows = []
    for task, tr in results["tasks"].items():
        for role in ("teacher", "student"):
            model_name = results[role]["name"]
            for comp in tr[role]["components"]:
                rows.append({"model": role, "model_name": model_name, "task": task, **comp})
    return pd.DataFrame(rows)
