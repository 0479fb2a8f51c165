"""Compare the teacher with each checkpoint in turn, reusing checkpoints an earlier run finished.

Each checkpoint's comparison is an ordinary ``compare`` into ``OUT/steps/step-NNNNNN``. A
``done.json`` beside it records what was compared (options, tasks, the checkpoint's weight
files); when it still matches, the results are read back without loading any model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from circuitdiff.options import CompareOptions
from circuitdiff.results import RESULTS_JSON, read_results, write_json, write_table
from circuitdiff.schema import json_ready
from circuitdiff.trajectory.checkpoints import Checkpoint, find_checkpoints
from circuitdiff.trajectory.rows import COLUMNS, TRAJECTORY_TABLE, trajectory_rows

STEPS_DIR = "steps"
DONE_FILE = "done.json"


def _identity(checkpoint: Checkpoint, tasks: Sequence[str], options: CompareOptions, teacher: str) -> dict[str, Any]:
    """What a finished comparison must match to be reused: the weights (size, mtime), tasks and options."""
    weights = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in checkpoint.folder.iterdir()
                     if f.suffix in (".safetensors", ".bin", ".gguf", ".json"))
    return json_ready({"teacher": teacher, "checkpoint": str(checkpoint.folder.resolve()), "weights": weights,
                       "tasks": list(tasks), "options": asdict(options)})


def _finished(folder: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    done = folder / DONE_FILE
    if not (done.is_file() and (folder / RESULTS_JSON).is_file()):
        return None
    try:
        if json.loads(done.read_text()) != identity:
            return None
        return read_results(folder)
    except ValueError:
        return None


def run_trajectory(teacher: Any, runs: Sequence[str | Path], tasks: Sequence[str], out: str | Path,
                   options: CompareOptions | None = None, *, progress: bool = True,
                   on_checkpoint: Any = None) -> pd.DataFrame:
    """Compare ``teacher`` with every checkpoint of ``runs``; write and return ``OUT/trajectory.parquet``.

    ``teacher`` is any model ``compare`` takes (a name, a folder, or a ``LoadedModel`` to load it
    once for all checkpoints). ``on_checkpoint(checkpoint, reused)`` is told of each one.
    """
    from circuitdiff.compare import as_loaded_model, check_paths, compare

    options = options or CompareOptions()
    checkpoints = find_checkpoints(runs)
    check_paths(tasks, options, out)
    out = Path(out)
    teacher_key = str(getattr(teacher, "name", teacher))
    loaded = None
    rows: list[dict[str, Any]] = []
    for checkpoint in checkpoints:
        folder = out / STEPS_DIR / checkpoint.label
        identity = _identity(checkpoint, tasks, options, teacher_key)
        results = _finished(folder, identity)
        if on_checkpoint is not None:
            on_checkpoint(checkpoint, results is not None)
        if results is None:
            loaded = loaded or as_loaded_model(teacher)
            results = compare(loaded, str(checkpoint.folder), list(tasks), options, out=folder, progress=progress,
                              report=False)
            write_json(folder / DONE_FILE, identity)
        rows += trajectory_rows(checkpoint.step, str(checkpoint.folder), results)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    write_table(out / TRAJECTORY_TABLE, table)
    return table
