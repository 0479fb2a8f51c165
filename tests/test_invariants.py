"""One invariant suite over every registered adapter: a family added as one adapter file is tested here.

Every check is against the plain Hugging Face model driven by hooks written in this file (or weight
edits), never against the package's own formula for the same quantity:

* hooked logits equal the plain forward, and the adapter's read-out equals the model's logits;
* the write check: block output minus block input is the sum of the head writes and the MLP write
  (``Adapter.residual_write``) plus what the block adds with every component at zero;
* a head or MLP with zeroed output weights equals the zero hook;
* the exact sweep equals a one-forward-per-component plain-hook loop;
* every edge ablated equals every node ablated;
* EAP-IG adds up over all edges to the metric change along its path (float64);
* exact edge patching equals path patching by hand (``test_edges._reference_edge``: plain hooks, the
  write taken from the real block, not from ``residual_write``);
* bfloat16: the sweep and the edges run, and agree with float32 to bfloat16's precision.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.eap import eap_scores
from circuitdiff.interventions.edge_circuits import ablated_edges_metric
from circuitdiff.interventions.edges import all_edges, exact_edge_metrics, receiver_name
from circuitdiff.interventions.exact import exact_sweep, record_activations
from circuitdiff.interventions.readout import read_metric
from circuitdiff.interventions.hooks import Patch, hooked
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.models.adapters import adapter_for
from circuitdiff.models.adapters.base import zero_head_in_weights
from circuitdiff.models.components import Component
from test_edges import N, SEQ, _batches, _first, _plain_metric, _reference_edge, _strong
from tiny_models import VARIANTS, tiny_model
from tiny_models import MODEL_TYPES as REGISTERED

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODEL_TYPES = REGISTERED + tuple(VARIANTS)
"""Every registered model type, and the other layouts of some (Falcon's, OPT-350m's, sequential GPT-NeoX)."""
EDGE_TYPES = [t for t in MODEL_TYPES if adapter_for(tiny_model(t, n_layers=1)).edges_refusal is None]


def _setup(model_type: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    model = _strong(tiny_model(model_type, seed=seed)).to(dtype)
    adapter = adapter_for(model)
    base, ref = _batches(seed)
    replacement = Replacement(Ablation.MEAN, record_activations(adapter, ref), n_base=N)
    return model, adapter, base, record_activations(adapter, base), replacement


def _plain_with(model: nn.Module, adapter, base, values: dict[Component, torch.Tensor | None],
                shift: bool = False) -> torch.Tensor:
    """The plain model's metric with components set by hand-written hooks (None: zero), or with ``shift``
    each component's output shifted by the given value."""
    handles = []
    for c, v in values.items():
        if c.head is None:
            def set_mlp(_m, _a, out, v=v):
                y = _first(out)
                new = torch.zeros_like(y) if v is None else v.to(y).expand(N, -1, y.shape[-1]).reshape(y.shape).clone()
                return y + new if shift else new
            handles.append(adapter.mlp_out(c.layer).register_forward_hook(set_mlp))
        else:
            sl = slice(c.head * adapter.d_head, (c.head + 1) * adapter.d_head)

            def put(_m, args, sl=sl, v=v):
                x = args[0].clone()
                new = 0 if v is None else v.to(x)
                x[..., sl] = x[..., sl] + new if shift else new
                return (x, *args[1:])
            handles.append(adapter.attn_out(c.layer).register_forward_pre_hook(put))
    try:
        return _plain_metric(model, base)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_hooked_forward_and_read_out_equal_the_plain_model(model_type: str) -> None:
    model = tiny_model(model_type)
    adapter = adapter_for(model)
    base, _ = _batches()
    plain = model(input_ids=base.input_ids, attention_mask=base.attention_mask).logits.detach()
    with torch.no_grad(), hooked(adapter, record=True) as rec:
        hooked_logits = model(input_ids=base.input_ids, attention_mask=base.attention_mask).logits
        hidden = adapter.final_hidden(base.input_ids, base.attention_mask)
    assert len(rec.heads) == len(rec.mlps) == adapter.n_layers
    assert torch.equal(hooked_logits, plain)
    torch.testing.assert_close(adapter.logits(hidden), plain, atol=2e-5, rtol=1e-5)
    rows = torch.arange(N)
    vocab = torch.stack([base.answer_ids, base.distractor_ids], 1)
    torch.testing.assert_close(adapter.logits(hidden[rows, base.read_pos], vocab),
                               plain[rows, base.read_pos][rows[:, None], vocab], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type", EDGE_TYPES)
def test_block_write_is_the_sum_of_head_and_mlp_writes(model_type: str) -> None:
    """Block output - block input = (what the block adds with every component at zero) + each head's
    write given the heads before it (``residual_write`` with that base) + the MLP's write from zero."""
    model = _strong(tiny_model(model_type))
    adapter = adapter_for(model)
    base, _ = _batches()
    for layer in range(adapter.n_layers):
        block, seen = adapter.blocks()[layer], {}

        def keep(key: str, x: torch.Tensor) -> None:
            seen.setdefault(key, x.detach().clone().view(N, -1, x.shape[-1]))  # OPT's MLP runs on flat rows

        hooks = [block.register_forward_pre_hook(lambda _m, a, kw: keep("in", a[0] if a else kw["hidden_states"]),
                                                 with_kwargs=True),
                 block.register_forward_hook(lambda _m, _a, out: keep("out", _first(out))),
                 adapter.attn_out(layer).register_forward_pre_hook(lambda _m, a: keep("heads", a[0])),
                 adapter.mlp_out(layer).register_forward_hook(lambda _m, _a, out: keep("mlp", _first(out)))]
        _plain_metric(model, base)
        for h in hooks:
            h.remove()
        zero = {c: None for c in (Component(layer, h) for h in range(adapter.n_heads))} | {Component(layer): None}
        at_zero: dict[str, torch.Tensor] = {}
        h = block.register_forward_hook(lambda _m, _a, out: at_zero.__setitem__("out", _first(out).detach().clone()))
        _plain_with(model, adapter, base, zero)
        h.remove()
        heads = seen["heads"]
        written = torch.zeros_like(heads)
        total = at_zero["out"] - seen["in"]
        with torch.no_grad():
            for head in range(adapter.n_heads):
                sl = slice(head * adapter.d_head, (head + 1) * adapter.d_head)
                total = total + adapter.residual_write(Component(layer, head), heads[..., sl], written.clone())
                written[..., sl] = heads[..., sl]
            total = total + adapter.residual_write(Component(layer), seen["mlp"], torch.zeros_like(seen["mlp"]))
        torch.testing.assert_close(total, seen["out"] - seen["in"], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_zeroed_output_weights_equal_the_zero_hook(model_type: str) -> None:
    model = tiny_model(model_type)
    adapter = adapter_for(model)
    base, _ = _batches()
    rows = torch.arange(N)
    for component in (Component(0, 1), Component(adapter.n_layers - 1, 2), Component(0)):
        hooked_value = read_metric(adapter, base, [Patch(component, rows)])
        twin = copy.deepcopy(model)
        twin_adapter = adapter_for(twin)
        with torch.no_grad():
            if component.head is not None:
                zero_head_in_weights(twin_adapter.attn_out(component.layer), component.head, adapter.d_head)
            else:
                down = twin_adapter.mlp_down(component.layer)
                down.weight.zero_()
                if down.bias is not None:
                    down.bias.zero_()
        torch.testing.assert_close(hooked_value, _plain_metric(twin, base), atol=2e-5, rtol=1e-5)
        assert not torch.allclose(hooked_value, _plain_metric(model, base), atol=1e-4)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_exact_sweep_equals_one_plain_forward_per_component(model_type: str) -> None:
    model, adapter, base, _, replacement = _setup(model_type)
    components = adapter.components()
    swept = exact_sweep(adapter, base, replacement, components)
    rows = torch.arange(N)
    for i, c in enumerate(components):
        expected = _plain_with(model, adapter, base, {c: replacement.values(c, rows)})
        torch.testing.assert_close(swept[i], expected, atol=5e-5, rtol=1e-4, msg=f"{model_type} {c}")


@pytest.mark.parametrize("model_type", EDGE_TYPES)
def test_every_edge_ablated_is_every_node_ablated(model_type: str) -> None:
    model, adapter, base, cache, replacement = _setup(model_type)
    rows = torch.arange(N)
    nodes = _plain_with(model, adapter, base, {c: replacement.values(c, rows) for c in adapter.components()})
    edges = ablated_edges_metric(adapter, base, cache, replacement, all_edges(adapter))
    assert (nodes - _plain_metric(model, base)).abs().max() > 1e-2
    torch.testing.assert_close(edges, nodes, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", EDGE_TYPES)
def test_eap_ig_adds_up_over_all_edges(model_type: str) -> None:
    """Over every edge, EAP-IG sums to the metric change between the clean run and the path's end (every
    component's output shifted by its ablated - clean difference, by plain hooks); float64, 20 steps."""
    model, adapter, base, cache, replacement = _setup(model_type, torch.float64)
    total = eap_scores(adapter, base, cache, replacement, all_edges(adapter), ig_steps=20).double().sum(0)
    rows = torch.arange(N)
    shifts = {c: replacement.values(c, rows) - cache.of(c) for c in adapter.components()}
    end = _plain_with(model, adapter, base, shifts, shift=True)
    change = end - _plain_metric(model, base)
    assert change.abs().max() > 1e-2
    torch.testing.assert_close(total, change, atol=3e-3, rtol=3e-3)


@pytest.mark.parametrize("model_type", EDGE_TYPES)
def test_exact_edges_equal_path_patching_by_hand(model_type: str) -> None:
    model, adapter, base, cache, replacement = _setup(model_type)
    _, ref = _batches()
    edges = all_edges(adapter)
    grouped = adapter.grouped_query_attention
    index = {(e.sender.name, receiver_name(e.receiver, grouped), e.channel): i for i, e in enumerate(edges)}
    kv = f"L1.KV{adapter.n_kv_heads - 1}" if grouped else "L1.H1"
    cases = [("L0.H1", "L1.H2", "q"), ("L0.H3", kv, "k"), ("L0.MLP", kv, "v"), ("L0.MLP", "L1.MLP", "input"),
             ("L1.H0", "logits", "input"), ("L0.H2", "L1.MLP", "input")]
    if not adapter.parallel_attention_mlp:
        cases.append(("L0.H3", "L0.MLP", "input"))
    chosen = [edges[index[c]] for c in cases]
    effects = exact_edge_metrics(adapter, base, cache, replacement, chosen) - _plain_metric(model, base)
    for case, got in zip(cases, effects):
        expected = _reference_edge(model, adapter, base, ref, Component.parse(case[0]), *case[1:])
        assert expected.abs().max() > 1e-5, case
        torch.testing.assert_close(got, expected, atol=5e-5, rtol=1e-3, msg=f"{model_type} {case}")


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_mlp_hidden_and_kernels(model_type: str) -> None:
    """The MLP's hidden activation at the read position is the down projection's input there (viewed as
    (batch, seq, d_ff) by hand where the model flattens rows); soft-capped attention is never switched to SDPA."""
    from circuitdiff.interventions.kernels import switches_attention
    from circuitdiff.interventions.mlp_hidden import mlp_hidden_at

    model = tiny_model(model_type)
    model.set_attn_implementation("eager")
    adapter = adapter_for(model)
    base, _ = _batches()
    seen = {}
    h = adapter.mlp_down(0).register_forward_pre_hook(lambda _m, args: seen.__setitem__("x", args[0].detach().clone()))
    with mlp_hidden_at(adapter, base.read_pos) as hidden:
        _plain_metric(model, base)
    h.remove()
    expected = seen["x"].view(N, SEQ, -1)[torch.arange(N), base.read_pos]
    torch.testing.assert_close(hidden[0], expected.float())
    capped = getattr(model.config, "attn_logit_softcapping", None) is not None
    assert not (capped and switches_attention(adapter))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_bfloat16_runs_and_agrees_with_float32(model_type: str) -> None:
    """Every family in bfloat16 on CPU: sweep (and edges where defined) run, and their effects agree
    with float32 within a few percent of the largest effect (bfloat16 keeps 8 bits of mantissa)."""
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model, adapter, base, cache, replacement = _setup(model_type, dtype)
        clean = read_metric(adapter, base)
        out = [exact_sweep(adapter, base, replacement, adapter.components()) - clean]
        if adapter.edges_refusal is None:
            edges = all_edges(adapter)[::7]
            out.append(exact_edge_metrics(adapter, base, cache, replacement, edges) - clean)
            out.append(eap_scores(adapter, base, cache, replacement, edges))
        results[dtype] = out
    for full, half in zip(results[torch.float32], results[torch.bfloat16]):
        assert torch.isfinite(half).all()
        scale = full.abs().max()
        assert scale > 1e-3
        assert (half - full).abs().max() <= 0.1 * scale, (model_type, float((half - full).abs().max() / scale))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("model_type", EDGE_TYPES)
def test_a_silent_sender_edges_read_exactly_zero(model_type: str, dtype: torch.dtype) -> None:
    """A head whose output-projection columns are zero writes nothing: every one of its edges, q/k/v
    receivers included, reads the clean metric bit for bit in every dtype, as the same head does as a node."""
    model, adapter, base, cache, replacement = _setup(model_type, dtype)
    zero_head_in_weights(adapter.attn_out(0), 1, adapter.d_head)
    cache = record_activations(adapter, base)
    edges = all_edges(adapter, [Component(0, 1), Component(0, 2)])
    got = exact_edge_metrics(adapter, base, cache, replacement, edges)
    with fast_kernels(adapter):  # as the clean pass reads it
        clean = read_metric(adapter, base)
    silent = torch.tensor([e.sender == Component(0, 1) for e in edges])
    assert torch.equal(got[silent], clean.expand(int(silent.sum()), -1))
    assert (got[~silent] - clean).abs().max() > 1e-4  # the live head's edges do read something
