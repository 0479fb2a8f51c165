"""Edge circuits run for real: consistency with edge and node patching, a planted circuit, matching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circuitdiff.analysis.edges import compare_edge_circuits
from circuitdiff.analysis.matching import Match
from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.edge_circuits import ablated_edges_metric, evaluate_edge_circuit, select_top_k
from circuitdiff.interventions.edges import all_edges, exact_edge_metrics, receiver_name
from circuitdiff.interventions.readout import read_metric
from circuitdiff.interventions.hooks import Patch
from circuitdiff.interventions.exact import record_activations
from circuitdiff.models.adapters import adapter_for
from test_edges import EDGE_FAMILIES, N, _batches, _setup, base_metric
from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.mark.parametrize("family", EDGE_FAMILIES)
def test_running_circuits_agrees_with_edge_and_node_patching(family: str) -> None:
    _, adapter, base, _, cache, replacement = _setup(family)
    edges = all_edges(adapter)
    clean = base_metric(adapter, base)
    # nothing ablated: the clean model
    torch.testing.assert_close(ablated_edges_metric(adapter, base, cache, replacement, []), clean, atol=1e-5, rtol=1e-5)
    # one edge ablated: exact edge patching
    some = edges[:: max(1, len(edges) // 12)]
    one = torch.stack([ablated_edges_metric(adapter, base, cache, replacement, [e]) for e in some])
    torch.testing.assert_close(one, exact_edge_metrics(adapter, base, cache, replacement, some), atol=1e-5, rtol=1e-4)
    # every edge ablated: every component ablated (node patching through the existing hooks)
    prompts = torch.arange(N)
    patches = []
    for c in adapter.components():
        values = replacement.values(c, prompts)
        patches.append(Patch(c, prompts, values))
    all_nodes = read_metric(adapter, base, patches)
    every = ablated_edges_metric(adapter, base, cache, replacement, edges)
    assert (all_nodes - clean).abs().max() > 1e-3
    torch.testing.assert_close(every, all_nodes, atol=1e-4, rtol=1e-4)


def _planted_model():
    """GPT-2 where only L0.H1 and L1.MLP write to the residual stream."""
    model = tiny_model("gpt2")
    adapter = adapter_for(model)
    d = adapter.d_head
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(7.0)
        for layer in range(2):
            c_proj = model.transformer.h[layer].attn.c_proj.weight  # (in, out): head h's rows
            for h in range(adapter.n_heads):
                if (layer, h) != (0, 1):
                    c_proj[h * d:(h + 1) * d] = 0
        model.transformer.h[0].mlp.c_proj.weight.zero_()
        model.transformer.h[0].mlp.c_proj.bias.zero_()
    return model, adapter


def test_planted_edge_circuit_is_recovered_and_runs_with_faithfulness_one() -> None:
    model, adapter = _planted_model()
    base, _ = _batches(2)
    cache = record_activations(adapter, base)
    replacement = Replacement(Ablation.ZERO, None, n_base=N)
    edges = all_edges(adapter)
    clean = base_metric(adapter, base)
    effects = (exact_edge_metrics(adapter, base, cache, replacement, edges) - clean).double().mean(1).numpy()
    names = [(e.sender.name, receiver_name(e.receiver, False), e.channel) for e in edges]
    planted = {("L0.H1", "L1.MLP", "input"), ("L0.H1", "logits", "input"), ("L1.MLP", "logits", "input")}
    carrying = {names[i] for i in np.flatnonzero(np.abs(effects) > 1e-6)}
    assert carrying == planted
    keep = select_top_k(effects, 3)
    assert {names[i] for i in keep} == planted
    circuit = evaluate_edge_circuit(adapter, base, cache, replacement, edges, keep, float(clean.mean()),
                                    method="exact", rule="top-k", parameter=3)
    assert circuit.faithfulness == pytest.approx(1.0, abs=1e-5)
    assert circuit.completeness != pytest.approx(0.0, abs=1e-3)
    partial = [i for i in keep if names[i] != ("L1.MLP", "logits", "input")]
    smaller = evaluate_edge_circuit(adapter, base, cache, replacement, edges, partial, float(clean.mean()),
                                    method="exact", rule="top-k", parameter=2)
    assert abs(smaller.faithfulness - 1.0) > 1e-2


def test_edge_circuit_comparison_maps_student_names_through_the_matching() -> None:
    def circuit(edges: list[list[str]]) -> dict:
        return {"circuits": [{"rule": "top-k", "parameter": 3.0, "method": "exact", "size": len(edges),
                              "faithfulness": 0.9, "completeness": 0.8, "edges": edges}]}

    teacher = circuit([["L0.H1", "L1.H0", "q"], ["L1.H0", "logits", "input"], ["L0.MLP", "L1.MLP", "input"]])
    student = circuit([["L0.H0", "L0.H1", "q"], ["L0.H1", "logits", "input"], ["L0.MLP", "logits", "input"]])
    matching = [Match("L0.H0", "L0.H1", 0.9), Match("L0.H1", "L1.H0", 0.8), Match("L0.MLP", "L0.MLP", 0.7)]
    [entry] = compare_edge_circuits(teacher, student, matching)
    assert entry["teacher_recall"] == pytest.approx(2 / 3)
    assert entry["overlap_jaccard"] == pytest.approx(2 / 4)
    assert entry["dropped"] == [["L0.MLP", "L1.MLP", "input"]]
    assert entry["added"] == [["L0.MLP", "logits", "input"]]
    assert compare_edge_circuits(teacher, None, matching) == []
