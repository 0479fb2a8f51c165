"""Circuit discovery recovers a planted circuit; speculative pruning equals sequential pruning."""

from __future__ import annotations

import torch

from circuitdiff.analysis.circuits import AblatedMetric, discover, evaluate, prune
from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.forward import logit_difference
from circuitdiff.interventions.sweep import exact_sweep
from circuitdiff.models.adapters import adapter_for
from circuitdiff.models.adapters.base import zero_head_in_weights
from circuitdiff.models.components import Component
from test_adapters import make_batch
from tiny_models import tiny_model

PLANTED = {Component(0, 1), Component(1, 2), Component(1, None)}


def planted_model() -> torch.nn.Module:
    """A 2-layer GPT-2 in which only L0.H1, L1.H2 and L1.MLP write anything (and strongly)."""
    model = tiny_model("gpt2", seed=11, n_layers=2)
    adapter = adapter_for(model)
    with torch.no_grad():
        for c in adapter.components():
            if c in PLANTED:
                target = adapter.attn_out(c.layer) if c.head is not None else model.transformer.h[c.layer].mlp.c_proj
                target.weight.mul_(30.0)
            elif c.head is not None:
                zero_head_in_weights(adapter.attn_out(c.layer), c.head, adapter.d_head)
            else:
                model.transformer.h[c.layer].mlp.c_proj.weight.zero_()
                model.transformer.h[c.layer].mlp.c_proj.bias.zero_()
        for block in model.transformer.h:
            block.attn.c_proj.bias.zero_()
    return model


def test_discovery_recovers_planted_circuit() -> None:
    adapter = adapter_for(planted_model())
    base = make_batch(n=16, seed=2)
    # an answer that the planted circuit prefers, so the clean metric is well away from 0
    with torch.no_grad():
        logits = adapter.logits_at(adapter.final_hidden(base.input_ids, base.attention_mask)[torch.arange(16), base.read_pos])
    order = logits.argsort(-1)
    base = type(base)(base.input_ids, base.attention_mask, base.read_pos, order[:, -1], order[:, 0])
    replacement = Replacement(Ablation.ZERO, None, n_base=len(base))
    clean = float(logit_difference(adapter, base).mean())
    components = adapter.components()
    effects = (exact_sweep(adapter, base, replacement, components) - clean).mean(1).tolist()
    decided: list[float] = []
    [circuit] = discover(adapter, base, replacement, effects, clean, thresholds=(0.05,), progress=decided.append)
    assert sum(decided) == len(components)  # the progress bar ends exactly full
    assert set(circuit.components) == {c.name for c in PLANTED}
    assert abs(circuit.faithfulness - 1.0) < 1e-4  # everything else writes zeros: ablating it changes nothing
    assert circuit.completeness > 0.5


def test_speculative_pruning_matches_sequential() -> None:
    adapter = adapter_for(tiny_model("gpt2", seed=12, n_layers=3))
    base = make_batch(n=8, seed=3)
    replacement = Replacement(Ablation.ZERO, None, n_base=len(base))
    metric = AblatedMetric(adapter, base, replacement)
    components = adapter.components()
    clean = float(logit_difference(adapter, base).mean())
    effects = (exact_sweep(adapter, base, replacement, components) - clean).mean(1).tolist()
    for threshold in (0.01, 0.05, 0.2):
        order = sorted(range(len(components)), key=lambda i: abs(effects[i]))
        pruned = []
        for i in order:  # the plain sequential definition
            if abs(metric([*pruned, components[i]]) - clean) < threshold * abs(clean):
                pruned.append(components[i])
        expected = [c for c in components if c not in set(pruned)]
        assert prune(metric, components, effects, clean, threshold) == expected
        # what survives keeps the metric within the band: faithfulness in [1 - T, 1 + T]
        found = evaluate(metric, components, expected, clean, threshold)
        assert abs(found.faithfulness - 1) < threshold + 1e-5 and 0 < found.size < len(components)
