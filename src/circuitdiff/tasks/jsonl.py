"""Custom tasks from JSONL files: one object per line.

    {"prompt": "When Mary and John ...", "answer": " Mary", "distractor": " John",
     "corrupted_prompt": "When Anna and Luke ...", "template": "when-went"}

``corrupted_prompt`` and ``template`` (a string or integer naming the prompt's template;
without it, prompts of equal token length form a template) are optional (null counts as
absent); blank lines are skipped; other
keys are ignored with a warning. A prompt containing ``{mask}`` makes the task masked, and
then every prompt must contain it exactly once. Every problem is reported at once, in one
line naming the file and the line numbers, because the CLI prints errors as one line.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from circuitdiff.errors import TaskFileError
from circuitdiff.tasks.base import MASK, Task, TaskPrompt

REQUIRED = ("prompt", "answer", "distractor")
OPTIONAL = ("corrupted_prompt", "template")
MAX_REPORTED = 5


def _check_record(obj: Any) -> str | None:
    """Why one decoded line is not a valid prompt record, or None if it is."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        return "missing " + ", ".join(repr(k) for k in missing)
    for key in REQUIRED + OPTIONAL:
        value = obj.get(key)
        if key in OPTIONAL and value is None:
            continue
        if key == "template" and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, str):
            return f"{key!r} must be a string, got {type(value).__name__}"
        if any("\ud800" <= ch <= "\udfff" for ch in value):  # a lone surrogate from a \u escape: not text
            return f"{key!r} contains an invalid character (a lone UTF-16 surrogate)"
    if not obj["prompt"].strip():
        return "'prompt' is empty"
    if not obj["answer"].strip() or not obj["distractor"].strip():
        return "'answer' and 'distractor' must not be blank"
    if obj["answer"] == obj["distractor"]:
        return "'answer' equals 'distractor'"
    return None


def _fail(path: Path, problems: list[tuple[int, str]]) -> TaskFileError:
    """One-line error listing the first few problems by line number."""
    shown = "; ".join(f"line {line}: {why}" for line, why in problems[:MAX_REPORTED])
    more = len(problems) - MAX_REPORTED
    suffix = f" (and {more} more bad lines)" if more > 0 else ""
    return TaskFileError(f"task file '{path}': {shown}{suffix}")


def _check_consistency(records: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, str]]:
    """Masks: a file is masked if any prompt has {mask}, then all need exactly one.

    Corrupted prompts: all lines or none (a partial set would silently disable them).
    """
    masked = any(MASK in rec["prompt"] for _, rec in records)
    problems = []
    for line, rec in records:
        for key in ("prompt", "corrupted_prompt"):
            text = rec.get(key)
            if text is None:
                continue
            count = text.count(MASK)
            if masked and count != 1:
                problems.append((line, f"{key!r} must contain {MASK} exactly once "
                                       f"(other prompts in the file are masked), found {count}"))
            elif not masked and count:
                problems.append((line, f"{key!r} contains {MASK} but the prompts are not masked"))
    some = [line for line, rec in records if rec.get("corrupted_prompt") is not None]
    if some and len(some) < len(records):
        problems += [(line, "no 'corrupted_prompt' (other lines have one: give all or none)")
                     for line, rec in records if rec.get("corrupted_prompt") is None]
    return problems


def load_jsonl_task(path: str | Path, n_prompts: int | None = None) -> Task:
    """Read a JSONL task; ``n_prompts`` keeps only the first n prompts (None: all of them)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskFileError(f"task file '{path}' not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(f"task file '{path}' cannot be read: {exc}") from None

    records: list[tuple[int, dict[str, Any]]] = []
    problems: list[tuple[int, str]] = []
    unknown: set[str] = set()
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((line_no, f"invalid JSON ({exc.msg} at column {exc.colno})"))
            continue
        except (ValueError, RecursionError) as exc:  # a huge integer, or nesting deeper than the parser's stack
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            problems.append((line_no, f"invalid JSON ({why})"))
            continue
        why = _check_record(obj)
        if why:
            problems.append((line_no, why))
            continue
        unknown |= set(obj) - set(REQUIRED) - set(OPTIONAL)
        records.append((line_no, obj))
    if not problems:
        problems = _check_consistency(records)
    if problems:
        raise _fail(path, problems)
    if not records:
        raise TaskFileError(f"task file '{path}' has no prompts (it is empty or only blank lines)")
    if unknown:
        warnings.warn(f"task file '{path}': ignoring unknown keys {sorted(unknown)}", stacklevel=2)
    if n_prompts is not None:
        if n_prompts < 1:
            raise TaskFileError(f"n_prompts must be a positive integer, got {n_prompts!r}")
        records = records[:n_prompts]

    prompts = tuple(
        TaskPrompt(rec["prompt"], rec["answer"], rec["distractor"], rec.get("corrupted_prompt"),
                   None if rec.get("template") is None else str(rec["template"]))
        for _, rec in records
    )
    return Task(
        name=path.name,
        prompts=prompts,
        masked=MASK in prompts[0].prompt,
        description=f"custom task from {path}",
        source_lines=tuple(line for line, _ in records),
    )
