"""Edge tables from results (no model code): one row per model, task, edge and method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from circuitdiff.analysis.matching import Match

EDGES_TABLE = "edges.parquet"
Edge = tuple[str, str, str]
"""(sender, receiver, channel)."""
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


def _counterparts(matchings: Sequence[Sequence[Match]]) -> dict[str, set[str]]:
    """Student component -> the teacher components it stands for (``logits`` stands for ``logits``)."""
    pairs: dict[str, set[str]] = {"logits": {"logits"}}
    for matching in matchings:
        for m in matching:
            pairs.setdefault(m.student, set()).add(m.teacher)
    return pairs


def classify_edges(teacher: set[Edge], student: set[Edge], counterparts: dict[str, set[str]]) -> dict[str, Any]:
    """Each teacher circuit edge is kept, merged or dropped; student edges with no teacher edge are added.

    A student edge (x, y, c) *stands for* a teacher edge (a, b, c) when x stands for a and y
    for b under ``counterparts`` (the one-to-one and the many-to-one matching together).
    ``merged``: a student edge standing for two or more teacher circuit edges; all of those
    teacher edges count as merged into it. ``kept``: the other teacher edges some student
    edge stands for. ``dropped``: teacher edges no student edge stands for. ``added``:
    student edges (student names) that stand for no teacher circuit edge.
    """
    def stands_for(edge: Edge) -> list[Edge]:
        sender, receiver, channel = edge
        return sorted(t for t in teacher if t[2] == channel and t[0] in counterparts.get(sender, ())
                      and t[1] in counterparts.get(receiver, ()))

    merged = [{"student": list(s), "teacher": [list(t) for t in ts]}
              for s in sorted(student) if len(ts := stands_for(s)) >= 2]
    in_merge = {tuple(t) for m in merged for t in m["teacher"]}
    covered = {t for s in student for t in stands_for(s)}
    kept = sorted(covered - in_merge)
    return {
        "kept": [list(t) for t in kept],
        "merged": merged,
        "dropped": sorted(list(t) for t in teacher - in_merge - set(kept)),
        "added": sorted(list(s) for s in student if not stands_for(s)),
    }


def compare_edge_circuits(t_edges: dict[str, Any] | None, s_edges: dict[str, Any] | None,
                          matching: Sequence[Match], many_to_one: Sequence[Match] = ()) -> list[dict[str, Any]]:
    """Teacher and student edge circuits of the same rule, the student's mapped onto teacher names.

    ``matching`` pairs each student component with one teacher component; an edge is the
    same edge when sender, receiver and channel all map (overlap and recall). ``kept``,
    ``merged``, ``dropped``, ``added``: see ``classify_edges`` (``many_to_one`` adds the
    pairs through which several teacher edges can land on one student edge).
    """
    if not t_edges or not s_edges:
        return []
    to_teacher = {m.student: m.teacher for m in matching}
    counterparts = _counterparts([matching, many_to_one])
    s_by_rule = {(c["rule"], c["parameter"]): c for c in s_edges.get("circuits", [])}
    out = []
    for tc in t_edges.get("circuits", []):
        sc = s_by_rule.get((tc["rule"], tc["parameter"]))
        if sc is None:
            continue
        teacher = {tuple(e) for e in tc["edges"]}
        student_raw = {tuple(e) for e in sc["edges"]}
        student = {_mapped(list(e), to_teacher) for e in student_raw}
        union = teacher | student
        out.append({
            "rule": tc["rule"], "parameter": tc["parameter"], "method": tc["method"],
            "teacher": {k: tc[k] for k in ("size", "faithfulness", "completeness")},
            "student": {k: sc[k] for k in ("size", "faithfulness", "completeness")},
            "overlap_jaccard": len(teacher & student) / len(union) if union else 1.0,
            "teacher_recall": len(teacher & student) / len(teacher) if teacher else 1.0,
            **classify_edges(teacher, student_raw, counterparts),
        })
    return out
