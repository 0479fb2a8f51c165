"""Node circuits: a planted circuit is recovered and complete in Wang et al.'s sense; the metric
curve, both faithfulness measures and the shared multi-threshold pruning against references
written here with plain forward hooks and weight edits."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations

import pytest
import torch

from circuitdiff.circuits import buckets, discover
from circuitdiff.circuits.buckets import BucketedEvaluator, circuit_evaluator
from circuitdiff.circuits.evaluation import CircuitEvaluator
from circuitdiff.circuits.measures import completeness, metric_curve
from circuitdiff.circuits.pruning import prune_thresholds
from circuitdiff.circuits.scoring import influence_order, pruning_order
from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.exact import exact_sweep, record_activations
from circuitdiff.models.adapters import adapter_for
from circuitdiff.models.adapters.base import zero_head_in_weights
from circuitdiff.models.components import Component
from tiny_models import FAMILIES, VOCAB, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PLANTED = {Component(0, 1), Component(1, 2), Component(1, None)}


def zero_weights(model: torch.nn.Module, components: Iterable[Component]) -> None:
    """Ground-truth zero ablation of GPT-2 components by editing their output weights."""
    adapter = adapter_for(model)
    with torch.no_grad():
        for c in components:
            if c.head is not None:
                zero_head_in_weights(adapter.attn_out(c.layer), c.head, adapter.d_head)
            else:
                model.transformer.h[c.layer].mlp.c_proj.weight.zero_()
                model.transformer.h[c.layer].mlp.c_proj.bias.zero_()


def planted_model() -> torch.nn.Module:
    """A 2-layer GPT-2 in which only L0.H1, L1.H2 and L1.MLP write anything (and strongly)."""
    model = tiny_model("gpt2", seed=11, n_layers=2)
    adapter = adapter_for(model)
    with torch.no_grad():
        for c in PLANTED:
            target = adapter.attn_out(c.layer) if c.head is not None else model.transformer.h[c.layer].mlp.c_proj
            target.weight.mul_(30.0)
        for block in model.transformer.h:
            block.attn.c_proj.bias.zero_()
    zero_weights(model, [c for c in adapter.components() if c not in PLANTED])
    return model


def prompts(n: int, seq: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpadded token ids and read positions, some before the end (so trimming is exercised)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (n, seq), generator=gen)
    read = seq - 1 - torch.randint(0, 3, (n,), generator=gen)
    return ids, read


def plain_logits(model: torch.nn.Module, ids: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits[torch.arange(len(ids)), read]


def task_batch(model: torch.nn.Module, n: int, seed: int) -> Batch:
    """Answer = the clean model's top token, distractor = its bottom token: a clearly positive metric."""
    ids, read = prompts(n, seed=seed)
    order = plain_logits(model, ids, read).argsort(-1)
    return Batch(ids, torch.ones_like(ids), read, order[:, -1], order[:, 0])


def plain_metric(model: torch.nn.Module, base: Batch, hooks: list | None = None) -> float:
    """Mean logit difference from the plain Hugging Face forward, with optional (module, hook) pairs."""
    handles = [m.register_forward_pre_hook(h) if pre else m.register_forward_hook(h) for m, h, pre in hooks or []]
    try:
        logits = plain_logits(model, base.input_ids, base.read_pos)
    finally:
        for h in handles:
            h.remove()
    rows = torch.arange(len(base))
    return float((logits[rows, base.answer_ids] - logits[rows, base.distractor_ids]).double().mean())


def mean_hooks(model: torch.nn.Module, reference: torch.Tensor, ablated: Iterable[Component]) -> list:
    """Plain hooks replacing each ablated component by its per-position mean over ``reference`` prompts."""
    adapter = adapter_for(model)
    heads_in, mlps_out = {}, {}
    rec = [(adapter.attn_out(l), (lambda l: lambda _m, a: heads_in.__setitem__(l, a[0].mean(0)))(l), True)
           for l in range(adapter.n_layers)]
    rec += [(model.transformer.h[l].mlp, (lambda l: lambda _m, _a, o: mlps_out.__setitem__(l, o.mean(0)))(l), False)
            for l in range(adapter.n_layers)]
    handles = [m.register_forward_pre_hook(h) if pre else m.register_forward_hook(h) for m, h, pre in rec]
    with torch.no_grad():
        model(input_ids=reference)
    for h in handles:
        h.remove()
    d = adapter.d_head
    hooks = []
    for c in ablated:
        if c.head is None:
            hooks.append((model.transformer.h[c.layer].mlp,
                          (lambda m: lambda _m, _a, o: m[: o.shape[1]].expand_as(o).clone())(mlps_out[c.layer]), False))
        else:
            def pre(_m, args, mean=heads_in[c.layer], sl=slice(c.head * d, (c.head + 1) * d)):
                x = args[0].clone()
                x[..., sl] = mean[: x.shape[1], sl]
                return (x,)
            hooks.append((adapter.attn_out(c.layer), pre, True))
    return hooks


def test_planted_circuit_is_recovered_and_complete() -> None:
    model = planted_model()
    adapter = adapter_for(model)
    base = task_batch(model, 16, seed=2)
    replacement = Replacement(Ablation.ZERO, None, n_base=len(base))
    clean = plain_metric(model, base)
    components = adapter.components()
    effects = (exact_sweep(adapter, base, replacement, components) - clean).mean(1).tolist()
    decided: list[float] = []
    found = discover(adapter, base, replacement, effects, clean, thresholds=(0.05,), progress=decided.append,
                     greedy_budget=32)
    [circuit] = found.circuits
    assert sum(decided) == len(components)  # the progress bar ends exactly full
    assert set(circuit.components) == {c.name for c in PLANTED}
    assert abs(circuit.faithfulness - 1.0) < 1e-4  # everything else writes zeros: ablating it changes nothing
    # Wang et al.: ablating K from the circuit or from the model is the same run here, for every K
    assert circuit.completeness_gap < 1e-5 and circuit.completeness_greedy_gap < 1e-5
    # without L1.MLP the circuit is incomplete; the largest gap over all 4 subsets K of the remaining
    # two members, each side computed by weight edits and the plain forward pass
    partial = [Component(0, 1), Component(1, 2)]
    missing = Component(1, None)
    expected = 0.0
    for r in range(3):
        for k in combinations(partial, r):
            with_circuit, with_model = planted_model(), planted_model()
            zero_weights(with_circuit, [*k, missing])
            zero_weights(with_model, k)
            expected = max(expected, abs(plain_metric(with_circuit, base) - plain_metric(with_model, base)))
    evaluator = CircuitEvaluator(adapter, base, replacement)
    wang = completeness(evaluator, partial, clean, n_subsets=16, seed=0, greedy_budget=32)
    assert wang.gap == pytest.approx(expected / abs(clean), rel=1e-4) and expected > 0.1 * abs(clean)
    assert wang.greedy_gap == pytest.approx(expected / abs(clean), rel=1e-4)


def strong_model() -> torch.nn.Module:
    """A 3-layer GPT-2 whose heads and MLPs write loudly enough to move the metric (random ones barely do)."""
    model = tiny_model("gpt2", seed=12, n_layers=3)
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_proj.weight.mul_(40.0)
            block.mlp.c_proj.weight.mul_(40.0)
    return model


@pytest.fixture(scope="module")
def mean_setup():
    model = strong_model()
    adapter = adapter_for(model)
    base = task_batch(model, 8, seed=3)
    reference_ids = 4 + prompts(12, seed=9)[0] % 6  # a narrow reference vocabulary: means far from clean
    cache = record_activations(adapter, Batch(reference_ids, torch.ones_like(reference_ids),
                                              torch.full((12,), 7), base.answer_ids[:1].repeat(12),
                                              base.distractor_ids[:1].repeat(12)))
    mean = Replacement(Ablation.MEAN, cache, n_base=len(base))
    clean = plain_metric(model, base)
    effects = (exact_sweep(adapter, base, mean, adapter.components()) - clean).mean(1).tolist()
    return model, adapter, base, reference_ids, cache, mean, clean, effects


@pytest.fixture(params=["one evaluator", "width buckets"])
def make_evaluator(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Both kinds of evaluator, for the searches and for ``discover``: one over all prompts, or one per
    width (the 8 prompts read at positions 5-7, so each width is its own bucket)."""
    bucketed = request.param == "width buckets"
    monkeypatch.setattr(buckets, "MIN_BUCKET_TOKENS", 1 if bucketed else 1 << 30)

    def make(adapter, base, replacement):
        evaluator = circuit_evaluator(adapter, base, replacement)
        assert isinstance(evaluator, BucketedEvaluator) == bucketed
        assert not bucketed or len(evaluator.parts) == len(set(base.read_pos.tolist())) > 1
        return evaluator

    return make


def test_curve_endpoints_and_other_ablation_faithfulness(mean_setup, make_evaluator) -> None:
    model, adapter, base, reference_ids, cache, mean, clean, effects = mean_setup
    components = adapter.components()
    zero = Replacement(Ablation.ZERO, None, n_base=len(base))
    found = discover(adapter, base, mean, effects, clean, thresholds=(0.02, 0.05), other=zero, seed=1)
    curve = found.curve
    assert curve.sizes[0] == 0 and curve.sizes[-1] == len(components) == len(curve.order)
    everything_mean = plain_metric(model, base, mean_hooks(model, reference_ids, components))
    assert curve.metric[0] == pytest.approx(everything_mean, abs=2e-5)
    assert curve.metric[-1] == pytest.approx(clean, abs=2e-5)
    assert abs(everything_mean - clean) > 1e-3  # 50x the tolerance: the check can fail
    zero_curve = discover(adapter, base, zero, effects, clean, thresholds=(0.2,)).curve
    nothing_left = strong_model()
    zero_weights(nothing_left, components)
    assert zero_curve.metric[0] == pytest.approx(plain_metric(nothing_left, base), abs=2e-5)
    assert zero_curve.metric[-1] == pytest.approx(clean, abs=2e-5)
    assert abs(zero_curve.metric[0] - clean) > 0.2 * abs(clean)
    for circuit in found.circuits:
        assert 0 < circuit.size < len(components)
        kept = {c for c in components if c.name in circuit.components}
        outside = [c for c in components if c not in kept]
        edited = strong_model()
        zero_weights(edited, outside)
        assert circuit.other_ablation == "zero"
        assert circuit.faithfulness_other == pytest.approx(plain_metric(edited, base) / clean, abs=5e-5)
        own = plain_metric(model, base, mean_hooks(model, reference_ids, outside)) / clean
        assert circuit.faithfulness == pytest.approx(own, abs=5e-5)
        circuit_removed = plain_metric(model, base, mean_hooks(model, reference_ids, kept))  # necessity: only C ablated
        assert circuit.necessity == pytest.approx(1 - circuit_removed / clean, abs=5e-5)
    # and the other way round: a zero-ablation run is cross-checked under mean ablation
    [circuit] = discover(adapter, base, zero, effects, clean, thresholds=(0.1,), other=mean).circuits
    outside = [c for c in components if c.name not in circuit.components]
    assert 0 < circuit.size < len(components) and circuit.other_ablation == "mean"
    expected = plain_metric(model, base, mean_hooks(model, reference_ids, outside)) / clean
    assert circuit.faithfulness_other == pytest.approx(expected, abs=5e-5)


def test_curve_shares_pruning_passes_and_every_point_equals_plain_hooks(mean_setup, make_evaluator) -> None:
    """After pruning, the curve reads pruning's states from the memo and walks the rest from its frontier:
    fewer passes than a fresh curve, and every point the plain hooked metric of its own set."""
    model, adapter, base, reference_ids, cache, mean, clean, effects = mean_setup
    components = adapter.components()
    evaluator = make_evaluator(adapter, base, mean)
    kept = prune_thresholds(evaluator, pruning_order(components, effects), clean, (0.02, 0.05))
    before = evaluator.passes
    curve = metric_curve(evaluator, influence_order(components, effects), clean)
    fresh = make_evaluator(adapter, base, mean)
    fresh_curve = metric_curve(fresh, influence_order(components, effects), clean)
    assert 0 < min(len(c) for c in kept.values())  # a component was kept: part of the curve is walked
    assert evaluator.passes - before < fresh.passes // 2, (evaluator.passes - before, fresh.passes)
    order = {c.name: c for c in components}
    ablate_from = [order[name] for name in curve.order]
    assert curve.metric == pytest.approx(fresh_curve.metric, abs=1e-5)
    for k, value in zip(curve.sizes, curve.metric):
        expected = plain_metric(model, base, mean_hooks(model, reference_ids, ablate_from[k:]))
        assert value == pytest.approx(expected, abs=2e-5), k
    assert max(curve.metric) - min(curve.metric) > 1e-3  # the points differ: the check can fail


def test_shared_pruning_equals_sequential_reference(mean_setup, make_evaluator) -> None:
    model, adapter, base, reference_ids, cache, mean, clean, effects = mean_setup
    components = adapter.components()
    thresholds = (0.01, 0.02, 0.05, 0.1)
    evaluator = make_evaluator(adapter, base, mean)
    shared = prune_thresholds(evaluator, pruning_order(components, effects), clean, thresholds)
    if isinstance(evaluator, BucketedEvaluator):  # the same walk on fewer padded positions
        single = CircuitEvaluator(adapter, base, mean)
        assert prune_thresholds(single, pruning_order(components, effects), clean, thresholds) == shared
        assert evaluator.block_tokens < 0.95 * single.block_tokens
    order = sorted(components, key=lambda c: abs(effects[components.index(c)]))
    sizes = set()
    for t in thresholds:  # the plain sequential definition, one full hooked forward pass per candidate
        pruned: list[Component] = []
        for c in order:
            if abs(plain_metric(model, base, mean_hooks(model, reference_ids, [*pruned, c])) - clean) < t * abs(clean):
                pruned.append(c)
        assert shared[t] == [c for c in components if c not in pruned], t
        sizes.add(len(shared[t]))
    assert len(sizes) >= 3  # the thresholds disagree, so their states diverged and were tracked apart


@pytest.mark.parametrize("family", FAMILIES)
def test_states_and_stacked_sets_equal_full_forward_passes(family: str) -> None:
    """Every family: a chain of states grown from recorded prefixes, and stacked sets from the clean prefix,
    give the metric of one full hooked forward pass per set from the embeddings."""
    from circuitdiff.interventions.readout import read_metric
    from circuitdiff.interventions.hooks import Patch
    from test_adapters import make_batch

    model = tiny_model(family, seed=5, n_layers=3)
    adapter = adapter_for(model)
    base = make_batch(n=6, seq=9, seed=4)
    cache = record_activations(adapter, make_batch(n=6, seq=9, seed=8))
    mean = Replacement(Ablation.MEAN, cache, n_base=len(base))
    components = adapter.components()
    rows = torch.arange(len(base))

    def full(ablated: Iterable[Component]) -> float:
        patches = [Patch(c, rows, mean.values(c, rows)) for c in ablated]
        return float(read_metric(adapter, base, patches).double().mean())

    gen = torch.Generator().manual_seed(0)
    order = [components[i] for i in torch.randperm(len(components), generator=gen)]
    evaluator = CircuitEvaluator(adapter, base, mean)
    state = frozenset()
    evaluator.prefix(state)
    for k in range(0, 12, 3):  # grow a state three components at a time, each pass starting late
        [(value, state)] = evaluator.extend([(state, order[k : k + 3])])
        assert value == pytest.approx(full(state), abs=1e-6)
    sets = [order[:2], order[3:9], components[-2:], order[5:6]]
    for got, ablated in zip(evaluator.ablated(sets), sets):
        assert got == pytest.approx(full(ablated), abs=1e-6)
    assert abs(full(order[:12]) - full([])) > 1e-4  # 100x the tolerance: the checks can fail
