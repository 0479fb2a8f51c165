"""Edge tables from results (no model code): one row per model, task, edge and method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from circuitdiff.analysis.matching import Match

EDGES_TABLE = "edges.parquet"
EDGE_COLUMNS = ["model", "task", "sender", "receiver", "channel", "effect", "method"]


def edges_frame(results: dict[str, Any]) -> pd.DataFrame:
    """``edges.parquet``: the edge records of every task's teacher and student run (empty without ``--edges``)."""
    rows = []
    for task, entry in results["tasks"].items():
        for role in ("teacher", "student"):
            edges = entry[role].get("edges")
            if edges:
                rows.extend({"model": role, "task": task, **record} for record in edges["records"])
    return pd.DataFrame(rows, columns=EDGE_COLUMNS)


def _mapped(edge: list[str], to_teacher: dict[str, str]) -> tuple[str, str, str]:
    """A student edge under teacher names (logits and unmatched names stay as they are)."""
    sender, receiver, channel = edge
    return to_teacher.get(sender, sender), to_teacher.get(receiver, receiver), channel


def compare_edge_circuits(t_edges: dict[str, Any] | None, s_edges: dict[str, Any] | None,
                          matching: Sequence[Match]) -> list[dict[str, Any]]:
    """Teacher and student edge circuits of the same rule, the student's mapped onto teacher names.

    ``matching`` pairs each student component with one teacher component; an edge is the
    same edge when sender, receiver and channel all map. ``dropped``: teacher circuit edges
    the mapped student circuit lacks; ``added``: mapped student edges the teacher circuit lacks.
    """
    if not t_edges or not s_edges:
        return []
    to_teacher = {m.student: m.teacher for m in matching}
    s_by_rule = {(c["rule"], c["parameter"]): c for c in s_edges.get("circuits", [])}
    out = []
    for tc in t_edges.get("circuits", []):
        sc = s_by_rule.get((tc["rule"], tc["parameter"]))
        if sc is None:
            continue
        teacher = {tuple(e) for e in tc["edges"]}
        student = {_mapped(e, to_teacher) for e in sc["edges"]}
        union = teacher | student
        out.append({
            "rule": tc["rule"], "parameter": tc["parameter"], "method": tc["method"],
            "teacher": {k: tc[k] for k in ("size", "faithfulness", "completeness")},
            "student": {k: sc[k] for k in ("size", "faithfulness", "completeness")},
            "overlap_jaccard": len(teacher & student) / len(union) if union else 1.0,
            "teacher_recall": len(teacher & student) / len(teacher) if teacher else 1.0,
            "dropped": sorted(list(e) for e in teacher - student),
            "added": sorted(list(e) for e in student - teacher),
        })
    return out
