"""Plain-data views the report needs, read from the typed results (``circuitdiff.schema``) and the Parquet tables.

Everything here tolerates missing parts (a table not written, a statistic that is None)
because a report of a partial run is still worth reading.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from circuitdiff import schema
from circuitdiff.results import PER_PROMPT_TABLE, SIMILARITY_TABLE
from circuitdiff.schema import Concentration, ModelTaskRecord, Note, Results

_LAYER = re.compile(r"^L(\d+)\.(?:H(\d+)|MLP)$")


def parse_name(name: str) -> tuple[int, int | None] | None:
    """(layer, head or None for the MLP), or None for a name that is not a component."""
    m = _LAYER.match(str(name))
    if m is None:
        return None
    return int(m.group(1)), (None if m.group(2) is None else int(m.group(2)))


def finite(x: Any) -> float | None:
    """``x`` as a float, or None when it is missing, NaN or infinite."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt(x: Any, spec: str = ".2f") -> str:
    f = finite(x)
    return "—" if f is None else format(f, spec)


@dataclass(frozen=True)
class Stat:
    """A point with its interval; any part may be missing."""

    point: float | None
    lo: float | None
    hi: float | None

    @classmethod
    def of(cls, record: schema.Stat | None) -> Stat | None:
        """The report's view of a schema interval; None when it or its point is missing."""
        if record is None or finite(record.point) is None:
            return None
        return cls(finite(record.point), finite(record.lo), finite(record.hi))

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    def text(self, spec: str = ".2f") -> str:
        if not self.has_interval:
            return fmt(self.point, spec)
        return f"{fmt(self.point, spec)} ({fmt(self.lo, spec)}–{fmt(self.hi, spec)})"


def concentration_stat(concentration: Concentration, role: str, key: str) -> Stat | None:
    """One statistic of one model (``TaskResult.concentration`` or ``concentration_heads``)."""
    return Stat.of((concentration.get(role) or {}).get(key))


def components(model: ModelTaskRecord) -> pd.DataFrame:
    """One row per component: name, layer, head (NaN for MLPs), kind, effect, share, support.

    ``support`` is the share signed by direction: positive when ablating the component lowers
    the metric, i.e. the component helps the model give the right answer.
    """
    rows = [c.to_json() for c in model.components]
    frame = pd.DataFrame(rows, columns=["name", "kind", "layer", "head", "effect", "share", "percent_of_clean",
                                       "percent_of_gap", "effect_lo", "effect_hi"])
    if frame.empty:
        return frame.assign(support=pd.Series(dtype=float))
    frame["effect"] = pd.to_numeric(frame["effect"], errors="coerce").fillna(0.0)
    frame["share"] = pd.to_numeric(frame["share"], errors="coerce").fillna(0.0)
    frame["head"] = pd.to_numeric(frame["head"], errors="coerce")
    frame["support"] = -np.sign(frame["effect"]) * frame["share"]
    return frame


@dataclass
class Tables:
    """The Parquet tables next to results.json, or why one is missing."""

    similarity: pd.DataFrame | None
    per_prompt: pd.DataFrame | None
    missing: dict[str, str]

    @classmethod
    def read(cls, out: Path) -> Tables:
        missing: dict[str, str] = {}

        def load(name: str) -> pd.DataFrame | None:
            path = out / name
            if not path.is_file():
                missing[name] = f"{name} was not found next to results.json"
                return None
            try:
                return pd.read_parquet(path)
            except Exception as exc:  # noqa: BLE001 - a broken table must not stop the report
                missing[name] = f"{name} could not be read ({type(exc).__name__}: {exc})"
                return None

        return cls(load(SIMILARITY_TABLE), load(PER_PROMPT_TABLE), missing)

    def matrix(self, task: str, measure: str) -> pd.DataFrame | None:
        """teacher x student matrix of one measure, in the order the rows were written."""
        if self.similarity is None:
            return None
        sim = self.similarity
        part = sim[(sim["task"] == task) & (sim["measure"] == measure)]
        if part.empty:
            return None
        rows, cols = list(dict.fromkeys(part["teacher"])), list(dict.fromkeys(part["student"]))
        return part.pivot(index="teacher", columns="student", values="value").reindex(index=rows, columns=cols)

    def effects(self, task: str, role: str) -> pd.DataFrame | None:
        """components x prompts matrix of per-prompt effects."""
        if self.per_prompt is None:
            return None
        pp = self.per_prompt
        part = pp[(pp["task"] == task) & (pp["model"] == role)]
        if part.empty:
            return None
        order = list(dict.fromkeys(part["component"]))
        return part.pivot(index="component", columns="prompt", values="effect").reindex(index=order)


def task_notes(results: Results, task: str) -> list[Note]:
    """The notes that belong to ``task``."""
    return results.task_notes(task)


def reason(results: Results, task: str, *topics: str, role: str | None = None, default: str) -> str:
    """Why something is missing: the task's first note on one of ``topics`` (and ``role``), else ``default``."""
    for note in task_notes(results, task):
        if note.topic in topics and (role is None or note.role == role):
            return note.text
    return default


def similarity_label(measure: str) -> str:
    """How the report names the similarity behind matching: "CKA" for the default, else the measure's name."""
    return "CKA" if measure == "linear_cka" else measure


def null_reason(results: Results, task: str) -> str:
    """Why the random-student null is missing for ``task``."""
    if not results.options.get("null_model", True) or results.options.get("n_null") == 0:
        return "the null model was switched off for this run"
    return reason(results, task, "null", default="it was not computed for this task")


def slug(text: str) -> str:
    """A file-name-safe version of a task name."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-")[:60] or "task"
