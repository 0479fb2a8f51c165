"""One row of ``trajectory.parquet`` per checkpoint and task, read from that checkpoint's results.json."""

from __future__ import annotations

from typing import Any

TRAJECTORY_TABLE = "trajectory.parquet"
COLUMNS = (
    "step", "task", "checkpoint", "alignment", "alignment_lo", "alignment_hi", "null", "null_q95", "above_chance",
    "verdict", "teacher_effective_number", "teacher_effective_number_lo", "teacher_effective_number_hi",
    "student_effective_number", "student_effective_number_lo", "student_effective_number_hi",
    "teacher_accuracy", "student_accuracy", "teacher_clean_metric", "student_clean_metric",
    "circuit_threshold", "circuit_overlap", "student_circuit_size", "teacher_circuit_size",
)


def _interval(entry: dict[str, Any], role: str, key: str = "effective_number") -> tuple[Any, Any, Any]:
    value = (entry.get("concentration") or {}).get(role, {}).get(key)
    return (None, None, None) if not value else (value.get("point"), value.get("lo"), value.get("hi"))


def verdict(alignment: dict[str, Any]) -> str:
    """In words: above the random-student chance level, not above it, or no chance level measured."""
    above = alignment.get("above_chance")
    if above is None:
        return "no null"
    return "above chance" if above else "not above chance"


def _circuit(entry: dict[str, Any]) -> dict[str, Any]:
    """The circuits at the comparison's default threshold, matched: overlap and sizes."""
    circuit = entry.get("circuit") or {}
    chosen = next((t for t in circuit.get("thresholds", []) if t.get("threshold") == circuit.get("threshold")), None)
    if chosen is None:
        return {"circuit_threshold": None, "circuit_overlap": None, "student_circuit_size": None,
                "teacher_circuit_size": None}
    return {"circuit_threshold": chosen["threshold"], "circuit_overlap": chosen.get("overlap_jaccard"),
            **{f"{role}_circuit_size": (chosen.get(role) or {}).get("size") for role in ("student", "teacher")}}


def task_row(step: int, checkpoint: str, task: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The trajectory's numbers for one task of one checkpoint's comparison."""
    align = entry["alignment"]
    lo, hi = (align.get("ci") or [None, None])
    t_eff, s_eff = _interval(entry, "teacher"), _interval(entry, "student")
    return {
        "step": step, "task": task, "checkpoint": checkpoint,
        "alignment": align.get("score"), "alignment_lo": lo, "alignment_hi": hi,
        "null": align.get("null"), "null_q95": align.get("null_q95"), "above_chance": align.get("above_chance"),
        "verdict": verdict(align),
        "teacher_effective_number": t_eff[0], "teacher_effective_number_lo": t_eff[1],
        "teacher_effective_number_hi": t_eff[2],
        "student_effective_number": s_eff[0], "student_effective_number_lo": s_eff[1],
        "student_effective_number_hi": s_eff[2],
        "teacher_accuracy": entry["teacher"]["accuracy"], "student_accuracy": entry["student"]["accuracy"],
        "teacher_clean_metric": entry["teacher"]["clean_metric"], "student_clean_metric": entry["student"]["clean_metric"],
        **_circuit(entry),
    }


def trajectory_rows(step: int, checkpoint: str, results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every task's row for one checkpoint, in the results' task order."""
    return [task_row(step, checkpoint, task, entry) for task, entry in results["tasks"].items()]
