"""Figures for analyses 3 and 4: where the heads that matter attend, and the MLPs compared.

Built from results.json's records (plain dicts), never from models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from circuitdiff.report.figures import ROLE_COLOR, STUDENT, TEACHER
from circuitdiff.report.svg import new_figure

ROLES = ("teacher", "student")


def _role_grid(records: list[dict[str, Any]], role: str) -> tuple[list[str], list[str], np.ndarray]:
    """(head labels, token roles, heads x roles mass averaged over templates) for one model."""
    mine = [r for r in records if r["role_of_model"] == role]
    heads = sorted({r["head"] for r in mine}, key=lambda h: -max(r["share"] for r in mine if r["head"] == h))
    roles = list(dict.fromkeys(r["role"] for r in mine))
    grid = np.full((len(heads), len(roles)), np.nan)
    for i, h in enumerate(heads):
        for j, ro in enumerate(roles):
            vals = [r["mean"] for r in mine if r["head"] == h and r["role"] == ro]
            if vals:
                grid[i, j] = float(np.mean(vals))
    labels = []
    for h in heads:
        first = next(r for r in mine if r["head"] == h)
        partner = f" ~ {first['counterpart']}" if first["counterpart"] else ""
        labels.append(f"{h} ({100 * first['share']:.0f}%){partner}")
    return labels, roles, grid


def attention_roles(records: list[dict[str, Any]]) -> Figure | None:
    """Heatmaps, teacher beside student: attention mass from the read position to each token role."""
    if not records:
        return None
    grids = {role: _role_grid(records, role) for role in ROLES}
    rows = max(len(g[0]) for g in grids.values())
    cols = max(len(g[1]) for g in grids.values())
    fig = new_figure(min(11.0, 3.6 + 1.1 * cols), min(7.0, 1.4 + 0.32 * rows))
    axes = fig.subplots(1, 2)
    mesh = None
    for ax, role in zip(axes, ROLES):
        labels, roles, grid = grids[role]
        if not labels:
            ax.set_axis_off()
            continue
        mesh = ax.pcolormesh(grid, cmap="magma_r", norm=Normalize(0, 1), edgecolors="white", linewidth=0.5)
        ax.set_ylim(len(labels), 0)
        ax.set_yticks(np.arange(len(labels)) + 0.5, labels, fontsize=7)
        ax.set_xticks(np.arange(len(roles)) + 0.5, roles, fontsize=7, rotation=30)
        ax.set_title(role, color=ROLE_COLOR[role], fontsize=9)
        ax.tick_params(length=0)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if np.isfinite(grid[i, j]):
                    ax.text(j + 0.5, i + 0.5, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if grid[i, j] > 0.5 else "black")
    if mesh is not None:
        fig.colorbar(mesh, ax=list(axes), shrink=0.85, pad=0.02).set_label("attention from the read position", fontsize=8)
    return fig


def _bars(ax: Any, x: np.ndarray, stats: list[dict[str, Any] | None], offset: float, color: str, label: str) -> None:
    pts = np.array([s["point"] if s and s["point"] is not None else np.nan for s in stats], dtype=float)
    lo = np.array([s["lo"] if s and s["lo"] is not None else np.nan for s in stats], dtype=float)
    hi = np.array([s["hi"] if s and s["hi"] is not None else np.nan for s in stats], dtype=float)
    err = np.vstack([np.nan_to_num(pts - lo), np.nan_to_num(hi - pts)])
    ax.bar(x + offset, pts, width=0.25, color=color, label=label, yerr=err, capsize=2, error_kw={"linewidth": 0.8})


def mlp_comparison(representation: list[dict[str, Any]], sparsity: list[dict[str, Any]]) -> Figure | None:
    """Left: held-out SVCCA, PWCCA and token-wise cosine per matched MLP pair; right: Hoyer sparsity per MLP."""
    if not representation and not sparsity:
        return None
    fig = new_figure(10.0, 3.4)
    left, right = fig.subplots(1, 2)
    x = np.arange(len(representation))
    for k, (key, color) in enumerate((("svcca", "#4c72b0"), ("pwcca", "#55a868"), ("tokenwise_cosine", "#c44e52"))):
        _bars(left, x, [r.get(key) for r in representation], (k - 1) * 0.27, color, key.replace("_", " "))
    left.set_xticks(x, [f"{r['teacher']}~{r['student']}" for r in representation], fontsize=7, rotation=20)
    left.set_ylim(min(0.0, left.get_ylim()[0]), 1.05)
    left.set_title("matched MLPs (SVCCA/PWCCA held out)", fontsize=9)
    left.legend(fontsize=7, frameon=False)
    for k, (role, color) in enumerate((("teacher", TEACHER), ("student", STUDENT))):
        mine = [r for r in sparsity if r["role_of_model"] == role]
        _bars(right, np.array([int(r["mlp"][1:].split(".")[0]) for r in mine], dtype=float),
              [r["hoyer"] for r in mine], (k - 0.5) * 0.27, color, role)
    right.set_xlabel("MLP layer")
    right.set_ylabel("Hoyer sparsity at the read position")
    right.set_title("hidden-unit sparsity (95% intervals over prompts)", fontsize=9)
    right.legend(fontsize=7, frameon=False)
    return fig
