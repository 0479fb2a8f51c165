"""Built-in teacher/student pairs shipped in ``circuitdiff/pairs`` (see ``pairs/index.json``)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from circuitdiff.errors import CircuitDiffError
from circuitdiff.models.loading import PAIRS_DIR

DEFAULT_PAIR = "tiny-gpt2"


@cache
def builtin_pairs() -> dict[str, dict[str, Any]]:
    index = PAIRS_DIR / "index.json"
    return json.loads(index.read_text(encoding="utf-8")) if index.is_file() else {}


def resolve_pair(pair: str | None, teacher: str | None, student: str | None) -> tuple[str, str, list[str]]:
    """(teacher, student, default tasks): explicit models win; otherwise a built-in pair."""
    if teacher and student:
        if pair:
            raise CircuitDiffError("give either --pair or --teacher and --student, not both")
        return teacher, student, ["ioi"]
    if teacher or student:
        raise CircuitDiffError("give both --teacher and --student (or neither, for the built-in pair)")
    name = pair or DEFAULT_PAIR
    pairs = builtin_pairs()
    if name not in pairs:
        known = ", ".join(sorted(pairs)) or "none installed"
        raise CircuitDiffError(f"unknown built-in pair '{name}' (built-in pairs: {known})")
    entry = pairs[name]
    return entry["teacher"], entry["student"], list(entry.get("default_tasks", ["ioi"]))
