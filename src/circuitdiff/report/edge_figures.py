"""The teacher's and the student's edge circuits as layered graphs, side by side.

Rows are the teacher's layers (logits on top); a student component sits on the row and
column of its one-to-one teacher match, so the same place in both panels means the same
job and a difference between the panels is a difference between the circuits.
"""

from __future__ import annotations

import re
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch

from circuitdiff.report.figures import ROLE_COLOR
from circuitdiff.report.svg import new_figure

LOGITS = "logits"
CHANNEL_STYLE = {"q": ("#e08e0b", 0.28), "k": ("#7b3fb3", -0.28), "v": ("#1a9850", 0.45), "input": ("#6b6b6b", 0.12)}
"""Channel -> (colour, arc bend): parallel edges between one pair of nodes bend apart."""
NODE_FILL = {"teacher": "#e3edf8", "student": "#f9e3e6"}
_NAME = re.compile(r"^L(\d+)\.(?:H(\d+)|(MLP)|KV(\d+))$")
Position = tuple[float, float]


def _grid_position(name: str, mlp_column: int) -> tuple[int, int] | None:
    """(column, layer) of a component on its own model's grid; None for logits or an unknown name."""
    m = _NAME.match(name)
    if m is None:
        return None
    layer = int(m.group(1))
    if m.group(2) is not None:
        return int(m.group(2)), layer
    if m.group(3):
        return mlp_column, layer
    return mlp_column + 1 + int(m.group(4)), layer


def default_circuit(task: dict[str, Any]) -> dict[str, Any] | None:
    """The comparison drawn: the first top-k rule (the default), else the first one there is."""
    comparisons = task.get("edge_circuits") or []
    return next((c for c in comparisons if c["rule"] == "top-k"), comparisons[0] if comparisons else None)


def circuit_edges(task: dict[str, Any], role: str, comparison: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """(sender, receiver, channel, effect) of one model's circuit under ``comparison``'s rule."""
    edges = (task.get(role) or {}).get("edges") or {}
    circuit = next((c for c in edges.get("circuits", []) if (c["rule"], c["parameter"], c["method"])
                    == (comparison["rule"], comparison["parameter"], comparison["method"])), None)
    if circuit is None:
        return []
    effect = {(r["sender"], r["receiver"], r["channel"]): float(r["effect"])
              for r in edges.get("records", []) if r["method"] == comparison["method"]}
    return [(s, r, c, effect.get((s, r, c), 0.0)) for s, r, c in circuit["edges"]]


def layered_layout(teacher_nodes: list[str], student_nodes: list[str],
                   matching: dict[str, str]) -> dict[str, dict[str, Position]]:
    """(x, y) of every node per role: y the teacher layer (logits above the last), x a column.

    A student node with a one-to-one teacher match takes that match's place; one without
    takes its own head column on the row of its relative depth, moved right past any taken
    place. Columns nobody uses are squeezed out so the drawing stays narrow.
    """
    names = [n for n in [*teacher_nodes, *matching.values(), *student_nodes] if n != LOGITS]
    parsed = [m for n in names if (m := _NAME.match(n))]
    mlp_column = 1 + max((int(m.group(2)) for m in parsed if m.group(2) is not None), default=-1)
    t_layers = 1 + max((p[1] for n in [*teacher_nodes, *matching.values()] if (p := _grid_position(n, mlp_column))),
                       default=0)
    s_layers = 1 + max((p[1] for n in student_nodes if (p := _grid_position(n, mlp_column))), default=0)
    teacher = {n: p for n in teacher_nodes if (p := _grid_position(n, mlp_column))}
    student: dict[str, tuple[int, int]] = {}
    for n in student_nodes:
        if n in matching and (p := _grid_position(matching[n], mlp_column)):
            student[n] = p
    for n in student_nodes:
        if n in student or (own := _grid_position(n, mlp_column)) is None:
            continue
        column, row = own[0], round(own[1] * (t_layers - 1) / max(s_layers - 1, 1))
        while (column, row) in student.values():
            column += 1
        student[n] = (column, row)
    used = sorted({p[0] for p in [*teacher.values(), *student.values()]})
    squeeze = {c: float(i) for i, c in enumerate(used)}
    top = (float(t_layers), (len(used) - 1) / 2 if used else 0.0)
    out: dict[str, dict[str, Position]] = {}
    for role, grid, nodes in (("teacher", teacher, teacher_nodes), ("student", student, student_nodes)):
        out[role] = {n: (squeeze[c], float(r)) for n, (c, r) in grid.items()}
        out[role].update({n: (top[1], top[0]) for n in nodes if n == LOGITS})
    return out


def _nodes(edges: list[tuple[str, str, str, float]]) -> list[str]:
    return sorted({n for s, r, _, _ in edges for n in (s, r)})


def _draw_panel(ax: Any, role: str, edges: list[tuple[str, str, str, float]], pos: dict[str, Position],
                scale: float, title: str, unshared: set[tuple[str, str, str]]) -> None:
    """One model's circuit: arrows under the nodes (faint: no counterpart in the other circuit), labelled boxes."""
    for sender, receiver, channel, effect in sorted(edges, key=lambda e: abs(e[3])):
        if sender not in pos or receiver not in pos:
            continue
        colour, bend = CHANNEL_STYLE.get(channel, CHANNEL_STYLE["input"])
        alpha = 0.35 if (sender, receiver, channel) in unshared else 0.85
        ax.add_patch(FancyArrowPatch(
            pos[sender], pos[receiver], connectionstyle=f"arc3,rad={bend}", arrowstyle="-|>", mutation_scale=7,
            lw=0.5 + 4.5 * abs(effect) / scale, color=colour, alpha=alpha, shrinkA=11, shrinkB=11,
            linestyle="-" if effect >= 0 else (0, (3, 1.5)), zorder=1))
    for name, (x, y) in pos.items():
        style = "round4,pad=0.35" if name == LOGITS else ("square,pad=0.3" if name.endswith(".MLP") else "round,pad=0.3")
        ax.text(x, y, name, ha="center", va="center", fontsize=8, zorder=3,
                bbox={"boxstyle": style, "fc": NODE_FILL[role], "ec": ROLE_COLOR[role], "lw": 1.0})
    ax.set_title(title, color=ROLE_COLOR[role], fontsize=9)


def edge_circuit_graphs(task: dict[str, Any]) -> Figure | None:
    """Both default edge circuits, rows by teacher layer, matched components on the same place."""
    comparison = default_circuit(task)
    if comparison is None:
        return None
    edges = {role: circuit_edges(task, role, comparison) for role in ("teacher", "student")}
    if not any(edges.values()):
        return None
    matching = {m["student"]: m["teacher"] for m in task.get("matching") or []}
    pos = layered_layout(_nodes(edges["teacher"]), _nodes(edges["student"]), matching)
    scale = max((abs(e[3]) for es in edges.values() for e in es), default=1.0) or 1.0
    rows = int(max((y for p in pos.values() for _, y in p.values()), default=0)) + 1
    columns = max((x for p in pos.values() for x, _ in p.values()), default=0) + 1
    fig = new_figure(11.0, min(11.0, 1.6 + 0.62 * rows))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, role in zip(axes, ("teacher", "student")):
        info = comparison[role]
        title = f"{role}: {info['size']} edges, faithfulness {info['faithfulness']:.2f}"
        unshared = {tuple(e) for e in comparison.get("dropped" if role == "teacher" else "added", [])}
        _draw_panel(ax, role, edges[role], pos[role], scale, title, unshared)
        ax.set_xlim(-0.8, columns - 0.2)
        ax.set_ylim(-0.7, rows - 0.3)
        ax.set_xticks([])
        ax.tick_params(length=0)
        for side in ("left", "bottom", "top", "right"):
            ax.spines[side].set_visible(False)
    axes[0].set_yticks(range(rows), [f"L{i}" if i < rows - 1 else "" for i in range(rows)], fontsize=8)
    axes[0].set_ylabel("teacher layer")
    handles = [Line2D([], [], color=c, lw=2.2, label=f"{k} input" if k in "qkv" else "MLP / logits input")
               for k, (c, _) in CHANNEL_STYLE.items()]
    handles += [Line2D([], [], color="#444", lw=0.8, label=f"width: |effect| (max {scale:.2g})"),
                Line2D([], [], color="#444", lw=1.5, linestyle=(0, (3, 1.5)), label="negative effect"),
                Line2D([], [], color="#444", lw=1.5, alpha=0.3, label="faint: dropped / added")]
    fig.legend(handles=handles, loc="outside lower center", ncols=7, fontsize=8, frameon=False)
    return fig


def edge_change_rows(task: dict[str, Any]) -> list[dict[str, str]]:
    """Kept, merged, dropped and added edges of the drawn comparison, one row per class."""
    comparison = default_circuit(task)
    if comparison is None or "kept" not in comparison:  # an older results.json has no classification
        return []

    def name(edge: list[str]) -> str:
        return f"{edge[0]} → {edge[1]} ({edge[2]})"

    merged = [f"{', '.join(name(t) for t in m['teacher'])} ⇒ {name(m['student'])}" for m in comparison.get("merged", [])]
    return [
        {"kind": "kept (teacher edges)", "n": str(len(comparison.get("kept", []))),
         "edges": "; ".join(name(e) for e in comparison.get("kept", []))},
        {"kind": "merged (teacher edges ⇒ one student edge)", "n": str(len(merged)), "edges": "; ".join(merged)},
        {"kind": "dropped (teacher edges)", "n": str(len(comparison.get("dropped", []))),
         "edges": "; ".join(name(e) for e in comparison.get("dropped", []))},
        {"kind": "added (student edges)", "n": str(len(comparison.get("added", []))),
         "edges": "; ".join(name(e) for e in comparison.get("added", []))},
    ]


CAPTION = ("Edge circuits (the default top-k rule), rows by teacher layer: each student component sits on the place of "
           "its one-to-one teacher match, so edges in the same place in both panels are the same edge after matching. "
           "Arrow width: |effect| on one scale for both models; colour: the input the receiver reads the sender through; "
           "faint arrows: teacher edges the student dropped (left) and student edges it added (right).")


def edge_missing_reason(options: dict[str, Any], task: dict[str, Any]) -> str:
    """Why there is no edge figure for this task (shown in place of the figure)."""
    if str(options.get("edges") or "none") == "none":
        return "edges were not measured in this run (--edges none)"
    if "edge_circuits" not in task:
        return "no edge circuits in the results (edges need a pre-norm family on both models)"
    return "no edge circuits were selected (the clean metric is near 0 for a model)"
