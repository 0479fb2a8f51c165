"""Edges on a multi-token task: exact edges against path patching by plain hooks, EAP-IG's completeness.

The metric of every reference is written here: a plain forward of prompt + continuation, ``log_softmax``
and the teacher-forced sum of the continuation's log-probabilities, answer minus distractor. Path patching
reuses test_edges' plain-hook reference (``_reference_edge``), one sequence at a time, on modules found by
the paths and q/k/v column layouts written out below (``Paths``), not by circuitdiff's adapters: GPT-2
(fused Conv1D q/k/v), Llama (grouped-query attention: k/v receivers per key/value head) and GPT-NeoX
(fused per-head q/k/v, parallel residual).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.eap import eap_scores
from circuitdiff.interventions.edge_circuits import ablated_edges_metric
from circuitdiff.interventions.edges import all_edges, exact_edge_metrics
from circuitdiff.interventions.exact import record_activations
from circuitdiff.interventions.readout import read_metric
from circuitdiff.models.adapters import adapter_for
from circuitdiff.models.components import Component
from circuitdiff.pipeline import batches
from circuitdiff.tasks import Task, TaskPrompt, encode_task
from test_edges import _named, _reference_edge, path_end_change
from tiny_models import tiny_model, word_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = Task("multi-edges", (  # answers and distractors of 1-3 tokens, lengths differing within the batch
    TaskPrompt("w11 w12 w13 w14", " w20", " w21 w22", corrupted_prompt="w31 w32 w33 w34", template="t"),
    TaskPrompt("w15 w16 w17 w18", " w23 w24", " w25", corrupted_prompt="w35 w36 w37 w38", template="t"),
    TaskPrompt("w19 w40 w41 w42", " w26 w27 w28", " w29 w43", corrupted_prompt="w44 w45 w46 w47", template="t"),
    TaskPrompt("w48 w49 w50 w51", " w52 w53", " w52 w54 w55", corrupted_prompt="w56 w57 w58 w59", template="t"),
))


def _ids(text: str) -> list[int]:
    return word_tokenizer()(text)["input_ids"]


@dataclass(frozen=True)
class Sequence:
    """One prompt + continuation, run alone (what the reference's hooks see as a batch of one)."""

    ids: torch.Tensor
    n_prompt: int
    continuation: tuple[int, ...]

    def __len__(self) -> int:
        return 1


def _sequence(prompt: str, continuation: str) -> Sequence:
    p, c = _ids(prompt), _ids(continuation)
    return Sequence(torch.tensor([p + c]), len(p), tuple(c))


def _logprob(model: torch.nn.Module, seq: Sequence) -> torch.Tensor:
    """sum_k log p(c_k | prompt, c_<k), float64, (1,)."""
    with torch.no_grad():
        logp = model(input_ids=seq.ids).logits[0].double().log_softmax(-1)
    return sum(logp[seq.n_prompt - 1 + k, t] for k, t in enumerate(seq.continuation)).reshape(1)


def _setup(dtype: torch.dtype = torch.float32, family: str = "gpt2"):
    """A tiny model with its weights scaled up (edges between random heads stand out); the task's batch, the clean cache, and paired patching
    (each prompt's own corrupted prompt, with the same continuation) as the replacement."""
    model = tiny_model(family, seed=5)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(7.0)
    model = model.to(dtype)
    adapter = adapter_for(model)
    enc = encode_task(TASK, word_tokenizer())
    assert enc.branches == 2
    clean, corrupted = batches(enc, "cpu")
    cache = record_activations(adapter, clean)
    rows = int(clean.input_ids.shape[0])
    replacement = Replacement(Ablation.NOISING, record_activations(adapter, corrupted), n_base=rows)
    return model, adapter, clean, cache, replacement


CASES = [("L0.H1", "L1.H2", "q"), ("L0.H3", "L1.H1", "k"), ("L0.MLP", "L1.H0", "v"), ("L0.MLP", "L1.MLP", "input"),
         ("L0.H3", "L0.MLP", "input"), ("L1.H0", "logits", "input"), ("L0.H2", "logits", "input")]
FAMILY_CASES = {
    "gpt2": CASES,
    "llama": [("L0.H1", "L1.H2", "q"), ("L0.H3", "L1.KV1", "k"), ("L0.MLP", "L1.KV0", "v"), ("L0.MLP", "L1.MLP", "input"),
              ("L0.H3", "L0.MLP", "input"), ("L1.H0", "logits", "input"), ("L0.H2", "logits", "input")],
    "gpt_neox": [("L0.H1", "L1.H2", "q"), ("L0.H3", "L1.H1", "k"), ("L0.MLP", "L1.H0", "v"), ("L0.MLP", "L1.MLP", "input"),
                 ("L0.H3", "L1.MLP", "input"), ("L1.H0", "logits", "input"), ("L0.H2", "logits", "input")],
}
"""Seven edges per family. GPT-NeoX's parallel MLP reads the block input, so its own layer's heads send it
nothing: the head -> MLP edge there crosses a layer."""


class Paths:
    """What the plain-hook reference hooks, found by module paths and q/k/v column layouts written out here."""

    BLOCKS = {"gpt2": "transformer.h.{}", "llama": "model.layers.{}", "gpt_neox": "gpt_neox.layers.{}"}
    NAMES = {  # attention output projection, MLP, norm before attention, norm before the MLP, final norm
        "gpt2": ("attn.c_proj", "mlp", "ln_1", "ln_2", "transformer.ln_f"),
        "llama": ("self_attn.o_proj", "mlp", "input_layernorm", "post_attention_layernorm", "model.norm"),
        "gpt_neox": ("attention.dense", "mlp", "input_layernorm", "post_attention_layernorm", "gpt_neox.final_layer_norm"),
    }

    def __init__(self, model: nn.Module, family: str) -> None:
        self.model, self.family = model, family
        self.d_head = model.config.hidden_size // model.config.num_attention_heads
        self.attn_out_name, self.mlp_name, self.attn_norm_name, self.mlp_norm_name, self.final_norm_name = self.NAMES[family]

    def _in(self, layer: int, name: str) -> nn.Module:
        return self.model.get_submodule(f"{self.BLOCKS[self.family].format(layer)}.{name}")

    def blocks(self) -> list[nn.Module]:
        return [self.model.get_submodule(self.BLOCKS[self.family].format(i)) for i in range(self.model.config.num_hidden_layers)]

    def attn_out(self, layer: int) -> nn.Module:
        return self._in(layer, self.attn_out_name)

    def mlp_out(self, layer: int) -> nn.Module:
        return self._in(layer, self.mlp_name)

    mlp_in = mlp_out  # the MLP receiver reads the MLP module's input

    def attn_norm(self, layer: int) -> nn.Module:
        return self._in(layer, self.attn_norm_name)

    def mlp_norm(self, layer: int) -> nn.Module:
        return self._in(layer, self.mlp_norm_name)

    def final_norm(self) -> nn.Module:
        return self.model.get_submodule(self.final_norm_name)

    def qkv_projection(self, layer: int, channel: str) -> tuple[nn.Module, None, None]:
        name = {"gpt2": "attn.c_attn", "llama": f"self_attn.{channel}_proj", "gpt_neox": "attention.query_key_value"}
        return self._in(layer, name[self.family]), None, None

    def qkv_columns(self, layer: int, channel: str, head: int) -> torch.Tensor:
        """GPT-2: [q | k | v], each heads in order; Llama: one projection per channel, k/v per key/value head;
        GPT-NeoX: per head [q k v] (the output viewed as (heads, 3 * d_head), then chunked in three)."""
        c, d = "qkv".index(channel), self.d_head
        start = {"gpt2": c * self.model.config.hidden_size + head * d, "llama": head * d,
                 "gpt_neox": head * 3 * d + c * d}[self.family]
        return torch.arange(start, start + d)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_exact_edges_match_plain_hook_path_patching_on_multi_token_answers(family: str) -> None:
    """Per prompt: sum over the answer (+) and distractor (-) continuations of the path-patched change of
    their teacher-forced log-probability, every continuation position read (the logits receiver too)."""
    model, adapter, batch, cache, replacement = _setup(family=family)
    paths = Paths(model, family)
    cases = FAMILY_CASES[family]
    edges = all_edges(adapter)
    index = _named(edges, family == "llama")
    chosen = [edges[index[c]] for c in cases]
    effects = exact_edge_metrics(adapter, batch, cache, replacement, chosen) - read_metric(adapter, batch)
    for case, got in zip(cases, effects):
        expected = torch.zeros(len(TASK))
        for i, p in enumerate(TASK.prompts):
            for sign, continuation in ((1.0, p.answer), (-1.0, p.distractor)):
                base, ref = _sequence(p.prompt, continuation), _sequence(p.corrupted_prompt, continuation)
                expected[i] += sign * float(_reference_edge(model, paths, base, ref, Component.parse(case[0]),
                                                            case[1], case[2], metric=_logprob)[0])
        assert expected.abs().max() > 1e-3, case  # the edge does something
        torch.testing.assert_close(got, expected, atol=5e-5, rtol=1e-3, msg=f"{family} {case}")


def _batch_metric(model: torch.nn.Module, batch) -> torch.Tensor:
    """The task's metric from one plain forward of the batch's rows, positions taken from the task's text:
    answer-branch row i is prompt i + its answer, distractor-branch row n + i the same with its distractor."""
    with torch.no_grad():
        logp = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double().log_softmax(-1)
    n, out = len(TASK), torch.zeros(len(TASK), dtype=torch.float64)
    for i, p in enumerate(TASK.prompts):
        prompt = _ids(p.prompt)
        for branch, (sign, continuation) in enumerate(((1.0, p.answer), (-1.0, p.distractor))):
            row, c = branch * n + i, _ids(continuation)
            assert batch.input_ids[row, :len(prompt) + len(c) - 1].tolist() == prompt + c[:-1]
            out[i] += sign * sum(logp[row, len(prompt) - 1 + k, t] for k, t in enumerate(c))
    return out


def test_eap_ig_is_complete_on_multi_token_answers() -> None:
    """Over every edge, EAP-IG's scores add up to the metric change between the clean run and the path's end
    (every component's output shifted by its patched - clean difference, plain hooks); float64, 40 steps."""
    model, adapter, batch, cache, replacement = _setup(torch.float64)
    total = eap_scores(adapter, batch, cache, replacement, all_edges(adapter), ig_steps=40).double().sum(0)
    change = path_end_change(model, adapter, batch, cache, replacement, _batch_metric)
    assert change.abs().min() > 1e-2
    torch.testing.assert_close(total, change, atol=2e-3, rtol=2e-3)


def test_edge_circuits_on_multi_token_answers() -> None:
    """Every edge ablated at once is every component patched at once (plain hooks setting each head's slice of
    the o-proj input and each MLP output to the corrupted run's); one edge ablated is exact edge patching."""
    model, adapter, batch, cache, replacement = _setup()
    edges = all_edges(adapter)
    rows = torch.arange(batch.input_ids.shape[0])
    handles = []
    for layer in range(adapter.n_layers):
        heads = torch.stack([replacement.values(Component(layer, h), rows) for h in range(adapter.n_heads)], 2)
        handles.append(adapter.attn_out(layer).register_forward_pre_hook(
            lambda _m, args, v=heads.flatten(2): (v.to(args[0]),)))
        mlp = replacement.values(Component(layer), rows)
        handles.append(adapter.mlp_out(layer).register_forward_hook(lambda _m, _a, out, v=mlp: v.to(out)))
    expected = _batch_metric(model, batch)
    for h in handles:
        h.remove()
    assert (expected - _batch_metric(model, batch)).abs().min() > 1e-2
    got = ablated_edges_metric(adapter, batch, cache, replacement, edges)
    torch.testing.assert_close(got.double(), expected, atol=2e-4, rtol=1e-4)
    one = [edges[_named(edges, False)[CASES[0]]]]
    torch.testing.assert_close(ablated_edges_metric(adapter, batch, cache, replacement, one),
                               exact_edge_metrics(adapter, batch, cache, replacement, one)[0], atol=1e-5, rtol=1e-5)
