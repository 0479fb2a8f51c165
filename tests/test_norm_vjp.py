"""The closed-form per-head norm VJP against autograd through the real norm modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from circuitdiff.interventions.norm_vjp import fold_weight, head_factors, norm_kind

B, S, D, N, E = 3, 5, 16, 4, 3


def _layer_norm() -> nn.Module:
    norm = nn.LayerNorm(D, eps=1e-3, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return norm


def _rms_norm() -> nn.Module:
    norm = LlamaRMSNorm(D, eps=1e-3)
    with torch.no_grad():
        norm.weight.normal_()
    return norm


@pytest.mark.parametrize("make", [_layer_norm, _rms_norm])
def test_closed_form_equals_autograd_through_the_real_norm_for_every_head(make) -> None:
    torch.manual_seed(0)
    norm = make()
    dtype = torch.float64 if norm_kind(norm) == "layer" else torch.float32  # transformers' RMSNorm runs in float32
    x = (torch.randn(B, S, D, dtype=dtype) * 3 + 1)
    heads = torch.randn(N, E, D, dtype=dtype)  # head h reads norm(x) @ heads[h].T
    grad = torch.randn(N, B * S, E, dtype=dtype)  # d(metric)/d(head h's projection output)
    expected = []
    for h in range(N):  # reference: autograd through the real module, one head at a time
        xh = x.clone().requires_grad_(True)
        (norm(xh).flatten(0, 1) @ heads[h].T).mul(grad[h]).sum().backward()
        expected.append(xh.grad.flatten(0, 1))
    # two projections (as Llama's q_proj and k_proj): heads 0-2 through one, head 3 through the other
    split = [slice(0, 3), slice(3, N)]
    factors = head_factors(norm, x, [grad[p] for p in split], [fold_weight(norm, heads[p]) for p in split])
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(factors.materialize(), torch.stack(expected), atol=tol, rtol=tol)
    # summed over IG steps (another input, another gradient), the factors give the sum of the gradients
    x2, grad2 = x.flip(1) * 0.5, grad.flip(1)
    other = head_factors(norm, x2, [grad2[p] for p in split], [fold_weight(norm, heads[p]) for p in split])
    second = head_factors(norm, x2, [grad2[p] for p in split], [fold_weight(norm, heads[p]) for p in split])
    both = head_factors(norm, x, [grad[p] for p in split], [fold_weight(norm, heads[p]) for p in split]).add_(other)
    torch.testing.assert_close(both.materialize(), factors.materialize() + second.materialize(), atol=tol, rtol=tol)


def test_other_norms_take_the_generic_path() -> None:
    class ScaledRMSNorm(nn.Module):  # e.g. Gemma's (1 + weight): not the closed form's formula
        weight = nn.Parameter(torch.zeros(D))

    assert norm_kind(ScaledRMSNorm()) is None and norm_kind(nn.LayerNorm((2, D))) is None
    assert norm_kind(_layer_norm()) == "layer" and norm_kind(_rms_norm()) == "rms"


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_generic_batched_vjp_path_gives_the_same_eap_scores(family: str, monkeypatch) -> None:
    """The autograd path (any norm without a closed form) against the closed form, EAP and EAP-IG."""
    from circuitdiff.interventions import graph
    from circuitdiff.interventions.eap import eap_scores
    from circuitdiff.interventions.edges import all_edges
    from test_edges import _setup

    _, adapter, base, _, cache, replacement = _setup(family)
    edges = all_edges(adapter)
    closed = [eap_scores(adapter, base, cache, replacement, edges, ig_steps=s) for s in (0, 2)]
    monkeypatch.setattr(graph, "norm_kind", lambda _norm: None)
    generic = [eap_scores(adapter, base, cache, replacement, edges, ig_steps=s) for s in (0, 2)]
    for a, b in zip(closed, generic):
        assert a.abs().max() > 1e-3
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_norms_are_classed_by_what_they_compute() -> None:
    """LayerNorm, RMSNorm (``w * x / rms``) and Gemma's ``(1 + w) * x / rms`` are recognised whatever their
    class is called, with the weight they effectively apply; a module that is no norm is not."""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.olmo2.modeling_olmo2 import Olmo2RMSNorm
    from transformers.models.phi3.modeling_phi3 import Phi3RMSNorm
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    from circuitdiff.interventions.norm_vjp import norm_spec

    torch.manual_seed(0)
    x = torch.randn(2, 3, D) * 2 + 0.3
    for cls in (LlamaRMSNorm, Qwen3RMSNorm, Phi3RMSNorm, Olmo2RMSNorm, GemmaRMSNorm):
        norm = cls(D, eps=1e-5)
        with torch.no_grad():
            norm.weight.normal_()
        spec = norm_spec(norm)
        assert spec is not None and spec.kind == "rms", cls.__name__
        expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * spec.weight.float()
        torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)
    gemma = GemmaRMSNorm(D)
    torch.testing.assert_close(norm_spec(gemma).weight, 1 + gemma.weight.double())
    assert norm_spec(_layer_norm()).kind == "layer"
    assert norm_spec(nn.Linear(D, D)) is None  # a 2-D weight: no norm
    scaled = nn.LayerNorm(D)
    scaled.forward = lambda t: 2 * nn.functional.layer_norm(t, (D,))  # behaves as no candidate does
    assert norm_spec(scaled) is None
