"""bfloat16 against float32 on the tiny model of every registered family (CPU).

    python scripts/families_bf16.py

Per family: the exact sweep's node effects and (where edges are defined) every exact edge effect,
mean over 5 prompts, mean ablation, from the invariant suite's setup (tests/test_invariants.py:
weights x7 so effects stand above rounding); the largest |bfloat16 - float32| difference relative to
the largest float32 effect, and the Spearman rank correlation of the two.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from circuitdiff.interventions.edges import all_edges, exact_edge_metrics  # noqa: E402
from circuitdiff.interventions.exact import exact_sweep  # noqa: E402
from circuitdiff.interventions.kernels import fast_kernels  # noqa: E402
from circuitdiff.interventions.readout import read_metric  # noqa: E402
from test_invariants import MODEL_TYPES, _setup  # noqa: E402


def effects(model_type: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    _, adapter, base, cache, replacement = _setup(model_type, dtype)
    with fast_kernels(adapter):
        clean = read_metric(adapter, base)
    nodes = (exact_sweep(adapter, base, replacement, adapter.components()) - clean).mean(1)
    if adapter.edges_refusal is not None:
        return nodes, None
    return nodes, (exact_edge_metrics(adapter, base, cache, replacement, all_edges(adapter)) - clean).mean(1)


def compared(full: torch.Tensor, half: torch.Tensor) -> str:
    return f"{float((half - full).abs().max() / full.abs().max()):.4f} rel., Spearman {spearmanr(full, half)[0]:.3f}"


for model_type in sys.argv[1:] or MODEL_TYPES:
    (n32, e32), (n16, e16) = effects(model_type, torch.float32), effects(model_type, torch.bfloat16)
    line = f"{model_type:12s} nodes {compared(n32, n16)}"
    if e32 is not None:
        line += f"   edges ({len(e32)}) {compared(e32, e16)}"
    print(line, flush=True)
