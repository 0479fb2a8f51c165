"""The report's figures, built from plain tables (never from models).

Each function returns a ``Figure`` or None when there is nothing to draw. Colours are
fixed per role so that teacher and student read the same in every figure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import PathPatch, Rectangle
from matplotlib.path import Path as MplPath

from circuitdiff.report.data import parse_name
from circuitdiff.report.svg import new_figure

TEACHER, STUDENT = "#2f6db3", "#d1495b"
ROLE_COLOR = {"teacher": TEACHER, "student": STUDENT}
SUPPORT_CMAP = "RdBu_r"
SIM_CMAP = "viridis"


def _grid(comps: pd.DataFrame, value: str) -> np.ndarray:
    """layers x heads array of ``value`` (NaN where a head is missing)."""
    heads = comps[comps["kind"] == "head"]
    n_layers = int(comps["layer"].max()) + 1
    n_heads = int(heads["head"].max()) + 1
    grid = np.full((n_layers, n_heads), np.nan)
    grid[heads["layer"].astype(int), heads["head"].astype(int)] = heads[value]
    return grid


def _two_grid_height(rows: int, cols: int, width: float = 9.0, reserved: float = 1.6) -> float:
    """Figure height that fits two side-by-side square-celled grids of rows x cols without blank bands."""
    cell = min(0.35, (width - reserved) / 2 / max(cols, 1))
    return min(6.5, 1.0 + rows * cell)


def _symmetric_limit(*frames: pd.DataFrame) -> float:
    values = np.concatenate([f["support"].to_numpy(dtype=float) for f in frames])
    return float(np.nanmax(np.abs(values))) if values.size and np.nanmax(np.abs(values)) > 0 else 1.0


def influence_heads(t: pd.DataFrame, s: pd.DataFrame) -> Figure | None:
    """Teacher and student heads, layer by head, on one colour scale (signed share of reliance)."""
    if not ((t["kind"] == "head").any() and (s["kind"] == "head").any()):
        return None
    grids = {"teacher": _grid(t, "support"), "student": _grid(s, "support")}
    vmax = _symmetric_limit(t, s)
    norm = TwoSlopeNorm(0.0, -vmax, vmax)
    rows = max(g.shape[0] for g in grids.values())
    fig = new_figure(9.0, _two_grid_height(rows, max(g.shape[1] for g in grids.values()), reserved=2.2))
    axes = fig.subplots(1, 2)
    mesh = None
    for ax, (role, grid) in zip(axes, grids.items()):
        mesh = ax.pcolormesh(grid, cmap=SUPPORT_CMAP, norm=norm, edgecolors="white", linewidth=0.5, rasterized=True)
        ax.set_xlim(0, grid.shape[1])
        ax.set_ylim(rows, 0)
        ax.set_aspect("equal")
        ax.set_title(f"{role} heads ({grid.shape[0]} layers × {grid.shape[1]} heads)", color=ROLE_COLOR[role])
        ax.set_xticks(np.arange(grid.shape[1]) + 0.5, [str(h) for h in range(grid.shape[1])], fontsize=7)
        ax.set_yticks(np.arange(grid.shape[0]) + 0.5, [f"L{i}" for i in range(grid.shape[0])], fontsize=7)
        ax.set_xlabel("head")
        ax.tick_params(length=0)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
    bar = fig.colorbar(mesh, ax=list(axes), shrink=0.8, pad=0.02)
    bar.set_label("share of reliance\n(red: helps the answer, blue: hurts it)", fontsize=8)
    return fig


def influence_mlp(t: pd.DataFrame, s: pd.DataFrame) -> Figure | None:
    """One bar per MLP layer, signed share of reliance, teacher and student on the same axis scale."""
    frames = {"teacher": t[t["kind"] == "mlp"], "student": s[s["kind"] == "mlp"]}
    if all(f.empty for f in frames.values()):
        return None
    vmax = max(_symmetric_limit(f) for f in frames.values() if not f.empty)
    fig = new_figure(9.0, 2.0)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (role, frame) in zip(axes, frames.items()):
        ax.axhline(0, color="#888", linewidth=0.6)
        ax.bar(frame["layer"], frame["support"], color=ROLE_COLOR[role], width=0.7)
        ax.set_title(f"{role} MLPs", color=ROLE_COLOR[role])
        ax.set_xlabel("layer")
        ax.set_xticks(frame["layer"], [str(int(v)) for v in frame["layer"]], fontsize=7)
        ax.set_ylim(-1.15 * vmax, 1.15 * vmax)
    axes[0].set_ylabel("share of reliance\n(+ helps, − hurts)")
    return fig


def cumulative_shares(effects: np.ndarray) -> np.ndarray:
    """Cumulative share of |effect|, largest component first, along the last axis."""
    a = np.abs(effects)
    total = a.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(total > 0, a / total, np.nan)
    return np.cumsum(-np.sort(-shares, axis=-1), axis=-1)


def bootstrap_band(per_prompt: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile band of the cumulative-share curve over prompt resamples (components x prompts input)."""
    n = per_prompt.shape[1]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    weights = np.stack([np.bincount(row, minlength=n) for row in idx]) / n
    curves = cumulative_shares(weights @ per_prompt.T)
    alpha = (1 - level) / 2
    return np.nanquantile(curves, alpha, axis=0), np.nanquantile(curves, 1 - alpha, axis=0)


def concentration_curves(
    shares: dict[str, np.ndarray], per_prompt: dict[str, np.ndarray | None], effective: dict[str, float | None], seed: int
) -> Figure | None:
    """Cumulative share against number of components (left) and against fraction of the model (right)."""
    if not any(v.size and np.nansum(v) > 0 for v in shares.values()):
        return None
    fig = new_figure(9.0, 3.2)
    axes = fig.subplots(1, 2, sharey=True)
    for role, share in shares.items():
        if not share.size or np.nansum(share) <= 0:
            continue
        curve = cumulative_shares(share)
        n = np.arange(1, curve.size + 1)
        band = per_prompt.get(role)
        lo_hi = bootstrap_band(band, 200, seed) if band is not None and band.shape[0] == curve.size else None
        for ax, x in ((axes[0], n), (axes[1], n / curve.size)):
            if lo_hi is not None:
                ax.fill_between(x, lo_hi[0], lo_hi[1], step="post", color=ROLE_COLOR[role], alpha=0.15, linewidth=0)
            ax.step(x, curve, where="post", color=ROLE_COLOR[role], linewidth=1.6,
                    label=f"{role} ({curve.size} components)")
        eff = effective.get(role)
        if eff is not None:
            axes[0].axvline(eff, color=ROLE_COLOR[role], linestyle=":", linewidth=1.0)
            axes[0].annotate(f"effective {eff:.1f}", (eff, 0.04), xytext=(3, 0), textcoords="offset points",
                             color=ROLE_COLOR[role], fontsize=7, rotation=90, va="bottom")
    for ax in axes:
        ax.axhline(0.8, color="#999", linestyle="--", linewidth=0.8)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.25)
    axes[0].set_xlabel("number of components, most influential first")
    axes[0].set_ylabel("cumulative share of reliance")
    axes[0].set_xscale("log")
    top = max(v.size for v in shares.values())
    ticks = [v for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if v <= top * 1.05]
    axes[0].set_xticks(ticks, [str(v) for v in ticks])
    axes[0].minorticks_off()
    axes[0].legend(loc="upper left", fontsize=8, frameon=False)
    axes[1].set_xlabel("fraction of the model's components")
    axes[1].set_xlim(0, 1)
    axes[1].text(0.99, 0.81, "80%", ha="right", va="bottom", fontsize=7, color="#777", transform=axes[1].get_yaxis_transform())
    return fig


def layer_cka(matrix: pd.DataFrame) -> Figure | None:
    """Residual-stream CKA, teacher layers (rows) x student layers (columns), best student layer marked."""
    if matrix is None or matrix.empty:
        return None
    values = matrix.to_numpy(dtype=float)
    rows, cols = values.shape
    fig = new_figure(min(9.0, 2.4 + 0.42 * cols), min(6.5, 1.3 + 0.3 * rows))
    ax = fig.subplots()
    mesh = ax.pcolormesh(values, cmap=SIM_CMAP, norm=Normalize(0, 1), edgecolors="white", linewidth=0.5,
                         rasterized=True)
    ax.set_ylim(rows, 0)
    ax.set_xticks(np.arange(cols) + 0.5, [str(c) for c in matrix.columns], fontsize=7)
    ax.set_yticks(np.arange(rows) + 0.5, [str(r) for r in matrix.index], fontsize=7)
    ax.set_xlabel("student residual stream after", color=STUDENT)
    ax.set_ylabel("teacher residual stream after", color=TEACHER)
    ax.tick_params(length=0)
    if rows * cols <= 300:
        for i in range(rows):
            for j in range(cols):
                if np.isfinite(values[i, j]):
                    ax.text(j + 0.5, i + 0.5, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if values[i, j] < 0.6 else "black")
    for i in range(rows):
        if np.isfinite(values[i]).any():
            j = int(np.nanargmax(values[i]))
            ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="#ff7f0e", linewidth=1.4))
    fig.colorbar(mesh, ax=ax, shrink=0.85, pad=0.02).set_label("linear CKA (orange box: best student layer)", fontsize=8)
    return fig


def _spread(names: list[str]) -> dict[str, float]:
    """Evenly spaced heights in [0, 1], first name at the top."""
    n = len(names)
    return {name: 0.5 if n == 1 else 1.0 - i / (n - 1) for i, name in enumerate(names)}


def _flows_to_draw(t: pd.DataFrame, s: pd.DataFrame, transport: list[dict[str, Any]], max_flows: int
                   ) -> list[dict[str, Any]]:
    known_t, known_s = set(t["name"]), set(s["name"])
    flows = [f for f in transport if f["teacher"] in known_t and f["student"] in known_s and f["mass"] > 0]
    return sorted(flows, key=lambda f: -f["mass"])[:max_flows]


def _band(ax: Any, y0: float, y1: float, width: float) -> None:
    """An S-shaped flow from the teacher column (x=0) to the student column (x=1)."""
    path = MplPath([(0, y0), (0.5, y0), (0.5, y1), (1, y1)], [MplPath.MOVETO, MplPath.CURVE4, MplPath.CURVE4, MplPath.CURVE4])
    ax.add_patch(PathPatch(path, facecolor="none", edgecolor="#f4a340", alpha=0.55, linewidth=width,
                           capstyle="butt", zorder=1))


def _nodes(ax: Any, comps: pd.DataFrame, y: dict[str, float], x: float, role: str, labels: dict[str, str]) -> None:
    """Markers sized by share (circle: head, square: MLP), each with its label beside it."""
    frame = comps.set_index("name").loc[list(y)]
    top = max(float(comps["share"].max()), 1e-12)
    left = role == "teacher"
    for name, row in frame.iterrows():
        ax.plot([x], [y[name]], marker="s" if row["kind"] == "mlp" else "o", markersize=4 + 8 * float(row["share"]) / top,
                color=ROLE_COLOR[role], markeredgewidth=0, linestyle="", zorder=3)
        ax.text(x - 0.04 if left else x + 0.04, y[name], labels[name], ha="right" if left else "left", va="center",
                fontsize=7, color="#222", zorder=4)


def matching_diagram(
    t: pd.DataFrame, s: pd.DataFrame, matching: list[dict[str, Any]], transport: list[dict[str, Any]],
    max_flows: int = 14,
) -> Figure | None:
    """Where the teacher's reliance goes: the largest optimal-transport flows between labelled components.

    Only components carrying a drawn flow are shown, each labelled with its name and share of
    reliance; a student component also names its one-to-one match and that match's CKA. Teacher
    components keep layer order; student components are ordered by the mass-weighted mean height
    of the teacher components feeding them (barycentre ordering), which removes most crossings.
    """
    flows = _flows_to_draw(t, s, transport, max_flows)
    if t.empty or s.empty or not flows:
        return None
    layer_order = {name: i for i, name in enumerate(t["name"])}
    yt = _spread(sorted({f["teacher"] for f in flows}, key=layer_order.__getitem__))
    pull: dict[str, list[float]] = {}
    for f in flows:
        pull.setdefault(f["student"], [0.0, 0.0])
        pull[f["student"]][0] += f["mass"] * yt[f["teacher"]]
        pull[f["student"]][1] += f["mass"]
    student_order = {name: i for i, name in enumerate(s["name"])}
    ys = _spread(sorted(pull, key=lambda n: (-pull[n][0] / pull[n][1], student_order[n])))
    share = {**dict(zip(t["name"], t["share"])), **dict(zip(s["name"], s["share"]))}
    match = {m["student"]: m for m in matching}
    t_labels = {n: f"{n} ({share[n]:.0%})" for n in yt}
    s_labels = {n: f"{n} ({share[n]:.0%})" + (f"  ≈ {match[n]['teacher']}, CKA {match[n]['similarity']:.2f}"
                                               if n in match else "") for n in ys}
    fig = new_figure(7.5, min(7.0, 1.2 + 0.32 * max(len(yt), len(ys))))
    ax = fig.subplots()
    top = flows[0]["mass"]
    for f in flows:
        _band(ax, yt[f["teacher"]], ys[f["student"]], 1.5 + 12.0 * f["mass"] / top)
    _nodes(ax, t, yt, 0.0, "teacher", t_labels)
    _nodes(ax, s, ys, 1.0, "student", s_labels)
    for x, role in ((0.0, "teacher"), (1.0, "student")):
        ax.text(x, 1.08, role, ha="center", va="bottom", color=ROLE_COLOR[role], fontsize=10, weight="bold")
    shown = sum(f["mass"] for f in flows)
    total = sum(f["mass"] for f in transport if f["mass"] > 0) or shown
    ax.set_title(f"{len(flows)} largest flows: {shown / total:.0%} of the teacher's reliance", fontsize=8, color="#555",
                 loc="center", pad=18)
    ax.set_xlim(-0.75, 1.95)
    ax.set_ylim(-0.08, 1.08)
    ax.axis("off")
    handles = [
        Line2D([], [], color="#f4a340", alpha=0.6, linewidth=6, label="reliance moved by optimal transport (width: mass)"),
        Line2D([], [], color="#555", marker="o", linestyle="", label="head (size: share of reliance)"),
        Line2D([], [], color="#555", marker="s", linestyle="", label="MLP"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    return fig


def _membership_grid(comps: pd.DataFrame, members: set[str], n_heads: int, rows: int) -> np.ndarray:
    """layers x (heads, gap, MLP): 1 in the circuit, 0 outside, NaN where there is no component."""
    grid = np.full((rows, n_heads + 2), np.nan)
    for name in comps["name"]:
        parsed = parse_name(name)
        if parsed is not None:
            layer, head = parsed
            grid[layer, n_heads + 1 if head is None else head] = 1.0 if name in members else 0.0
    return grid


def circuits(t: pd.DataFrame, s: pd.DataFrame, teacher_circuit: list[str], student_circuit: list[str],
             student_mapped: list[str]) -> Figure | None:
    """Both circuits on layer x (heads, MLP) grids; teacher cells marked where a student circuit member maps."""
    if t.empty or s.empty:
        return None
    rows = max(int(t["layer"].max()), int(s["layer"].max())) + 1
    n_cols = max(int(f.loc[f["kind"] == "head", "head"].max() + 1) if (f["kind"] == "head").any() else 0 for f in (t, s))
    fig = new_figure(9.0, _two_grid_height(rows, n_cols + 1.4) + 0.25)
    axes = fig.subplots(1, 2)
    for ax, comps, members, role in ((axes[0], t, teacher_circuit, "teacher"), (axes[1], s, student_circuit, "student")):
        n_heads = int(comps.loc[comps["kind"] == "head", "head"].max() + 1) if (comps["kind"] == "head").any() else 0
        own_rows = int(comps["layer"].max()) + 1  # only the layers this model has
        grid = _membership_grid(comps, set(members), n_heads, own_rows)
        edges = np.concatenate([np.arange(n_heads + 1), [n_heads + 0.4, n_heads + 1.4]])
        cmap = ListedColormap(["#e6e7ec", ROLE_COLOR[role]])
        ax.pcolormesh(edges, np.arange(own_rows + 1), np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1,
                      edgecolors="white", linewidth=1.0, rasterized=True)
        if role == "teacher":
            for name in set(student_mapped):
                parsed = parse_name(name)
                if parsed is not None:
                    layer, head = parsed
                    x = head if head is not None else n_heads + 0.4
                    ax.plot(x + 0.5, layer + 0.5, marker="o", markersize=4, color="white",
                            markeredgecolor=STUDENT, markeredgewidth=1.2, linestyle="")
        ax.set_xlim(0, n_heads + 1.4)
        ax.set_ylim(own_rows, 0)
        ax.set_aspect("equal")
        ax.set_anchor("N")  # a shallower student sits level with the teacher's first layers
        ax.set_xticks([h + 0.5 for h in range(n_heads)] + [n_heads + 0.9],
                      [str(h) for h in range(n_heads)] + ["MLP"], fontsize=7)
        ax.set_yticks(np.arange(own_rows) + 0.5, [f"L{i}" for i in range(own_rows)], fontsize=7)
        ax.tick_params(length=0)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
        inside = int(np.nansum(grid))
        ax.set_title(f"{role} circuit: {inside} of {len(comps)} components", color=ROLE_COLOR[role])
    fig.legend(handles=[Line2D([], [], marker="o", markersize=4, color="white", markeredgecolor=STUDENT,
                               markeredgewidth=1.2, linestyle="", label="teacher component matched by a student circuit component")],
               loc="outside lower center", fontsize=7, frameon=False)
    return fig


def circuit_curves(curves: dict[str, dict[str, Any] | None], circuits: dict[str, list[dict[str, Any]]]) -> Figure | None:
    """Metric kept (share of clean) against components kept, most influential first, per model.

    Every point is an exactly evaluated run with the rest ablated; markers are each threshold's
    pruned circuit (size, faithfulness), which need not lie on the curve (pruning skips components).
    """
    drawn = {role: c for role, c in curves.items() if c and c.get("sizes")}
    if not drawn:
        return None
    fig = new_figure(6.4, 3.6)
    ax = fig.subplots()
    for role, curve in drawn.items():
        n = max(curve["sizes"])
        ax.plot(curve["sizes"], curve["fraction_of_clean"], color=ROLE_COLOR[role], linewidth=1.4, marker=".",
                markersize=3, label=f"{role} ({n} components)")
        found = [(c["size"], c["faithfulness"], c["threshold"]) for c in circuits.get(role, []) if c.get("faithfulness") is not None]
        for size, faithful, threshold in found:
            ax.plot([size], [faithful], marker="D", markersize=5, color="white", markeredgecolor=ROLE_COLOR[role],
                    markeredgewidth=1.3, linestyle="")
            ax.annotate(f"T={threshold:g}", (size, faithful), textcoords="offset points", xytext=(4, -9), fontsize=6,
                        color=ROLE_COLOR[role])
    ax.axhline(1.0, color="#888", linewidth=0.8, linestyle=":")
    ax.axhline(0.0, color="#bbb", linewidth=0.6)
    ax.set_xlabel("components kept (most influential first; the rest ablated)")
    ax.set_ylabel("metric kept (share of clean)")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="D", markersize=5, color="white", markeredgecolor="#555", linestyle=""))
    labels.append("pruned circuit at threshold T")
    ax.legend(handles, labels, fontsize=7, frameon=False, loc="lower right")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig
