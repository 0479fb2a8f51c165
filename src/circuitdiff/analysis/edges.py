"""Edge tables from results (no model code): one row per model, task, edge and method."""

from __future__ import annotations

from typing import Any

import pandas as pd

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
