"""Edges: the intervention graph, exact edge patching against plain-hook references, EAP/EAP-IG."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from circuitdiff.errors import EdgesUnsupportedError
from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.eap import eap_scores
from circuitdiff.interventions.edges import Edge, all_edges, exact_edge_metrics
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.readout import read_metric
from circuitdiff.interventions.graph import Intervention, Site, intervene
from circuitdiff.interventions.norm_vjp import norm_kind
from circuitdiff.interventions.exact import exact_sweep, record_activations
from circuitdiff.models.adapters import adapter_for
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component
from tiny_models import EDGE_FAMILIES, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N, SEQ = 5, 7


@torch.no_grad()
def base_metric(adapter: Adapter, base: Batch) -> torch.Tensor:
    """Unablated metric per prompt: one plain forward pass, no patches."""
    return read_metric(adapter, base).cpu()


def _batches(seed: int = 0) -> tuple[Batch, Batch]:
    g = torch.Generator().manual_seed(seed)
    ids, ref_ids = torch.randint(4, 60, (N, SEQ), generator=g), torch.randint(4, 60, (N, SEQ), generator=g)
    read = torch.randint(3, SEQ, (N,), generator=g)
    answer, distractor = torch.randint(4, 60, (N,), generator=g), torch.randint(4, 60, (N,), generator=g)
    mask = torch.ones_like(ids)
    return Batch(ids, mask, read, answer, distractor), Batch(ref_ids, mask, read, answer, distractor)


def _strong(model: nn.Module) -> nn.Module:
    """Default initialisation (std 0.02) makes edges between random heads ~1e-8; std ~0.15 makes them visible."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(7.0)
    return model


def _setup(family: str, ablation: Ablation = Ablation.MEAN, dtype: torch.dtype = torch.float32):
    model = _strong(tiny_model(family)).to(dtype)
    adapter = adapter_for(model)
    base, ref = _batches()
    cache = record_activations(adapter, base)
    replacement = Replacement(ablation, record_activations(adapter, ref), n_base=N)
    return model, adapter, base, ref, cache, replacement


# --- an independent reference with plain forward hooks -------------------------------------

def _plain_metric(model: nn.Module, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    rows = torch.arange(len(batch))
    at = logits[rows, batch.read_pos]
    return at[rows, batch.answer_ids] - at[rows, batch.distractor_ids]


def _record(model: nn.Module, batch: Batch, module: nn.Module, pre: bool, metric=_plain_metric) -> torch.Tensor:
    """``module``'s first input (pre) or its output in a plain forward pass (hidden_states when passed by name);
    ``metric`` runs the pass (the test's own metric of ``batch``)."""
    seen = {}

    def keep(x: torch.Tensor) -> None:  # as (batch, seq, d), also where the model flattens rows (OPT's MLP)
        seen.setdefault("x", x.detach().clone().view(len(batch), -1, x.shape[-1]))

    if pre:
        h = module.register_forward_pre_hook(lambda _m, args, kw: keep(args[0] if args else kw["hidden_states"]),
                                             with_kwargs=True)
    else:
        h = module.register_forward_hook(lambda _m, _a, out: keep(_first(out)))
    metric(model, batch)
    h.remove()
    return seen["x"]


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _reference_write(model, adapter, base, ref, sender: Component, metric=_plain_metric) -> torch.Tensor:
    """Mean-ablated minus clean write of ``sender`` to the residual stream, from plain hooks only: the block's
    output with the sender set to its mean over the reference run (and the block's MLP held at its clean
    output, so that only the sender's own write differs), minus the clean block output. No formula for a
    write is assumed: sandwich norms and residual multipliers are whatever the real block does."""
    block = adapter.blocks()[sender.layer]
    mlp = adapter.mlp_out(sender.layer)
    clean_mlp = _record(model, base, mlp, False, metric)
    if sender.head is None:
        value = _record(model, ref, mlp, False, metric).mean(0, keepdim=True).expand_as(clean_mlp).clone()
        hooks = [mlp.register_forward_hook(lambda _m, _a, out: value.to(_first(out)).reshape(_first(out).shape))]
    else:
        o_proj = adapter.attn_out(sender.layer)
        sl = slice(sender.head * adapter.d_head, (sender.head + 1) * adapter.d_head)
        mean = _record(model, ref, o_proj, True, metric)[..., sl].mean(0, keepdim=True)

        def set_head(_m, args):
            x = args[0].clone()
            x[..., sl] = mean.to(x)
            return (x, *args[1:])

        hooks = [o_proj.register_forward_pre_hook(set_head),
                 mlp.register_forward_hook(lambda _m, _a, out: clean_mlp.to(_first(out)).reshape(_first(out).shape))]
    patched = _record(model, base, block, False, metric)
    for h in hooks:
        h.remove()
    return patched - _record(model, base, block, False, metric)


def _add_to_input(write: torch.Tensor):
    def add(_m, args, kwargs):
        if args:
            return (args[0] + write.to(args[0]).reshape(args[0].shape), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + write.to(kwargs["hidden_states"])}
    return add


def _reference_edge(model, adapter, base, ref, sender: Component, receiver: str, channel: str,
                    scale: float = 1.0, metric=_plain_metric) -> torch.Tensor:
    """Path patching by hand: run A feeds the stream plus the sender's write to the module that reads the
    receiver's residual stream and records what the receiver reads from it (the MLP's input, or the q/k/v
    module's output); run B is the clean run with only the receiver's part replaced by that record.
    ``metric(model, batch)``: the metric, from a plain forward pass (the logit difference unless given)."""
    write = scale * _reference_write(model, adapter, base, ref, sender, metric)
    clean = metric(model, base)
    if receiver == "logits":
        h = adapter.final_norm().register_forward_pre_hook(_add_to_input(write), with_kwargs=True)
        patched = metric(model, base)
        h.remove()
        return patched - clean
    layer = int(receiver[1:receiver.index(".")])
    if receiver.endswith("MLP"):
        stream, reader, cols = adapter.mlp_norm(layer), adapter.mlp_in(layer), None
    else:
        head = int(receiver.split("KV")[-1] if "KV" in receiver else receiver.split(".H")[-1])
        reader, _, _ = adapter.qkv_projection(layer, channel)
        stream, cols = adapter.attn_norm(layer), adapter.qkv_columns(layer, channel, head)
    h = stream.register_forward_pre_hook(_add_to_input(write), with_kwargs=True)
    read = _record(model, base, reader, cols is None, metric)
    h.remove()
    if cols is None:
        h = reader.register_forward_pre_hook(lambda _m, args: (read.to(args[0]).reshape(args[0].shape), *args[1:]))
    else:
        def take_cols(_m, _a, out):
            out = out.clone()
            out[..., cols] = read[..., cols]
            return out
        h = reader.register_forward_hook(take_cols)
    patched = metric(model, base)
    h.remove()
    return patched - clean


def path_end_change(model, adapter, base, cache, replacement, metric=_plain_metric) -> torch.Tensor:
    """The metric at EAP-IG's path end minus the clean metric: every component's output shifted by its
    ablated - clean difference (on every batch row) by plain forward hooks; ``metric(model, base)``."""
    rows = torch.arange(base.input_ids.shape[0])
    handles = []
    for layer in range(adapter.n_layers):
        heads = torch.stack([replacement.values(Component(layer, h), rows) - cache.of(Component(layer, h))
                             for h in range(adapter.n_heads)], dim=2).flatten(2)
        handles.append(adapter.attn_out(layer).register_forward_pre_hook(
            lambda _m, args, d=heads: (args[0] + d.to(args[0]),)))
        mlp = replacement.values(Component(layer), rows) - cache.of(Component(layer))
        handles.append(adapter.mlp_out(layer).register_forward_hook(lambda _m, _a, out, d=mlp: out + d.to(out)))
    shifted = metric(model, base)
    for h in handles:
        h.remove()
    return shifted - metric(model, base)


def _named(edges: list[Edge], grouped: bool) -> dict[tuple[str, str, str], int]:
    from circuitdiff.interventions.edges import receiver_name

    return {(e.sender.name, receiver_name(e.receiver, grouped), e.channel): i for i, e in enumerate(edges)}


@pytest.mark.parametrize("family", EDGE_FAMILIES)
def test_exact_edge_effects_match_plain_hook_reference(family: str) -> None:
    model, adapter, base, ref, cache, replacement = _setup(family)
    edges = all_edges(adapter)
    grouped = adapter.grouped_query_attention
    kv = "L1.KV1" if grouped else "L1.H1"
    cases = [("L0.H1", "L1.H2", "q"), ("L0.H3", kv, "k"), ("L0.MLP", kv, "v"), ("L0.MLP", "L1.MLP", "input"),
             ("L1.H0", "logits", "input"), ("L0.H2", "logits", "input")]
    if not adapter.parallel_attention_mlp:
        cases.append(("L0.H3", "L0.MLP", "input"))
    else:  # GPT-NeoX's parallel MLP reads the block input: its own layer's heads send it nothing
        assert ("L0.H3", "L0.MLP", "input") not in _named(edges, grouped)
    index = _named(edges, grouped)
    effects = exact_edge_metrics(adapter, base, cache, replacement, edges) - base_metric(adapter, base)
    for sender, receiver, channel in cases:
        expected = _reference_edge(model, adapter, base, ref, Component.parse(sender), receiver, channel)
        got = effects[index[(sender, receiver, channel)]]
        assert expected.abs().max() > 1e-5, (sender, receiver, channel)  # the edge does something
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-3, msg=f"{family} {sender}->{receiver}.{channel}")


@pytest.mark.parametrize("family", EDGE_FAMILIES)
def test_eap_is_the_derivative_of_path_patching_along_the_sender_write(family: str) -> None:
    """EAP's per-head q/k/v, MLP and logits gradients against central differences of the
    plain-hook path patching reference, in float64."""
    model, adapter, base, ref, cache, replacement = _setup(family, dtype=torch.float64)
    edges = all_edges(adapter)
    index = _named(edges, adapter.grouped_query_attention)
    kv = "L1.KV1" if adapter.grouped_query_attention else "L1.H1"
    cases = [("L0.H1", "L1.H2", "q"), ("L0.H3", kv, "k"), ("L0.MLP", kv, "v"), ("L0.MLP", "L1.MLP", "input"),
             ("L0.H2", "logits", "input")]
    chosen = [edges[index[c]] for c in cases]
    scores = eap_scores(adapter, base, cache, replacement, chosen).double()
    eps = 1e-2 if norm_kind(adapter.final_norm()) == "rms" else 1e-4  # transformers' RMSNorms compute in float32
    for case, score in zip(cases, scores):
        sender = Component.parse(case[0])
        up = _reference_edge(model, adapter, base, ref, sender, *case[1:], scale=eps)
        down = _reference_edge(model, adapter, base, ref, sender, *case[1:], scale=-eps)
        derivative = (up - down) / (2 * eps)
        assert derivative.abs().max() > 1e-4, case
        torch.testing.assert_close(score, derivative, atol=5e-5, rtol=1e-3, msg=str(case))


@pytest.mark.parametrize("family", EDGE_FAMILIES)
def test_last_mlp_edge_to_logits_equals_its_node_effect(family: str) -> None:
    _, adapter, base, _, cache, replacement = _setup(family)
    last = Component(adapter.n_layers - 1)
    edge = Edge(last, Site("resid_final"))
    base_m = base_metric(adapter, base)
    edge_effect = exact_edge_metrics(adapter, base, cache, replacement, [edge])[0] - base_m
    node_effect = exact_sweep(adapter, base, replacement, [last])[0] - base_m
    assert node_effect.abs().max() > 1e-4
    torch.testing.assert_close(edge_effect, node_effect, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", EDGE_FAMILIES)
def test_batched_edge_patching_equals_one_edge_at_a_time(family: str) -> None:
    _, adapter, base, _, cache, replacement = _setup(family, Ablation.RESAMPLE)
    edges = all_edges(adapter)
    batched = exact_edge_metrics(adapter, base, cache, replacement, edges)
    single = exact_edge_metrics(adapter, base, cache, replacement, edges, max_edges_per_pass=1, memory_budget=1)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_eap_and_eap_ig_equal_exact_where_the_metric_is_linear_in_the_sender() -> None:
    """Without the final norm the logit difference is linear in the final residual stream:
    every edge to the logits is then exactly its first-order estimate."""
    model = _strong(tiny_model("gpt2"))
    model.transformer.ln_f = nn.Identity()
    adapter = adapter_for(model)
    base, ref = _batches(1)
    cache = record_activations(adapter, base)
    replacement = Replacement(Ablation.MEAN, record_activations(adapter, ref), n_base=N)
    edges = [Edge(c, Site("resid_final")) for c in adapter.components()]
    exact = exact_edge_metrics(adapter, base, cache, replacement, edges) - base_metric(adapter, base)
    assert exact.abs().max() > 1e-3
    for steps in (0, 3):
        estimate = eap_scores(adapter, base, cache, replacement, edges, ig_steps=steps)
        torch.testing.assert_close(estimate, exact, atol=1e-5, rtol=1e-4)
    # a q edge is not linear: EAP is only an estimate there (a test that could not fail otherwise)
    q_edge = [Edge(Component(0, 1), Site("q_input", 1, 2))]
    q_exact = exact_edge_metrics(adapter, base, cache, replacement, q_edge) - base_metric(adapter, base)
    assert not torch.allclose(eap_scores(adapter, base, cache, replacement, q_edge), q_exact, atol=1e-7, rtol=1e-3)


@pytest.mark.parametrize("family", EDGE_FAMILIES)
def test_split_receiver_inputs_compute_the_plain_model(family: str) -> None:
    model, adapter, base, *_ = _setup(family)
    plain = _plain_metric(model, base)
    embed = model.get_input_embeddings().register_forward_hook(lambda _m, _a, out: out.requires_grad_(True))
    with torch.enable_grad(), intervene(adapter, split=True) as split:
        out = model(input_ids=base.input_ids, attention_mask=base.attention_mask).logits
        rows = torch.arange(N)
        at = out[rows, base.read_pos]
        metric = at[rows, base.answer_ids] - at[rows, base.distractor_ids]
        metric.sum().backward()
    embed.remove()
    torch.testing.assert_close(metric.detach(), plain, atol=1e-5, rtol=1e-5)
    assert set(split.projections) == {(l, c) for l in range(adapter.n_layers) for c in "qkv"}
    assert split.qkv_grad(0, "k").shape == (adapter.n_kv_heads, N, SEQ, adapter.d_model)
    assert split.qkv_grads(0).shape == (adapter.n_heads + 2 * adapter.n_kv_heads, N, SEQ, adapter.d_model)


def test_site_names_round_trip_and_interventions_hit_the_right_site() -> None:
    names = ["blocks.0.resid_pre", "blocks.1.attn.q_input.3", "blocks.1.attn.v_input.0", "blocks.0.attn.head_out.2",
             "blocks.1.mlp.input", "blocks.0.mlp.output", "resid_final"]
    assert [Site.parse(n).name for n in names] == names
    with pytest.raises(ValueError, match="not a site name"):
        Site.parse("blocks.x.mlp")
    model, adapter, base, *_ = _setup("gpt2")
    plain = _plain_metric(model, base)
    rows = torch.tensor([1, 3])
    for name in names:  # identity functions change nothing
        with torch.no_grad(), intervene(adapter, [Intervention(Site.parse(name), rows, lambda x: x * 1)]):
            torch.testing.assert_close(_plain_metric(model, base), plain, atol=1e-6, rtol=1e-6)
    # zeroing head 2's output equals zeroing the weights that read it; other rows are untouched
    with torch.no_grad(), intervene(adapter, [Intervention(Site.parse("blocks.0.attn.head_out.2"), rows)]):
        hooked = _plain_metric(model, base)
    with torch.no_grad():
        model.transformer.h[0].attn.c_proj.weight[2 * adapter.d_head:3 * adapter.d_head] = 0
    edited = _plain_metric(model, base)
    torch.testing.assert_close(hooked[rows], edited[rows], atol=1e-6, rtol=1e-6)
    keep = torch.tensor([0, 2, 4])
    torch.testing.assert_close(hooked[keep], plain[keep])


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_post_layernorm_families_refuse_edges_in_one_line(family: str) -> None:
    adapter = adapter_for(tiny_model(family))
    with pytest.raises(EdgesUnsupportedError, match="post-LayerNorm") as err:
        all_edges(adapter)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_eap_ig_is_complete_over_all_edges(family: str) -> None:
    """Integrated gradients add up: over every edge, EAP-IG scores sum to the metric change
    between the clean run and the path's end (every component's output shifted by its
    ablated - clean difference), computed here with plain forward hooks; float64, 40 steps."""
    model, adapter, base, ref, cache, replacement = _setup(family, dtype=torch.float64)
    edges = all_edges(adapter)
    total = eap_scores(adapter, base, cache, replacement, edges, ig_steps=40).double().sum(0)
    change = path_end_change(model, adapter, base, cache, replacement)
    assert change.abs().max() > 1e-2
    torch.testing.assert_close(total, change, atol=2e-3, rtol=2e-3)
