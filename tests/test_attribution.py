"""Attribution patching is exact where the metric is linear in a component, and close elsewhere."""

from __future__ import annotations

import torch
from scipy.stats import spearmanr

from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.attribution import attribution_effects
from circuitdiff.interventions.readout import read_metric
from circuitdiff.interventions.exact import exact_sweep, record_activations
from circuitdiff.models.adapters import adapter_for
from test_adapters import make_batch
from tiny_models import tiny_model


def linear_tail_gpt2() -> torch.nn.Module:
    """GPT-2 whose final norm is the identity and whose last MLP writes nothing.

    The logit difference is then an affine function of each last-layer head's output,
    so the first-order estimate of ablating such a head is exact.
    """
    model = tiny_model("gpt2", seed=3, n_layers=2)
    model.transformer.ln_f = torch.nn.Identity()
    with torch.no_grad():
        model.transformer.h[-1].mlp.c_proj.weight.zero_()
        model.transformer.h[-1].mlp.c_proj.bias.zero_()
        model.transformer.h[-1].attn.c_proj.weight.mul_(1000.0)  # make the heads matter
    return model


def test_attribution_is_exact_where_the_metric_is_linear() -> None:
    adapter = adapter_for(linear_tail_gpt2())
    base, reference = make_batch(seed=1), make_batch(seed=2)
    replacement = Replacement(Ablation.MEAN, record_activations(adapter, reference), n_base=len(base))
    last = [c for c in adapter.components() if c.layer == adapter.n_layers - 1]
    exact = exact_sweep(adapter, base, replacement, last) - read_metric(adapter, base)
    estimate = attribution_effects(adapter, base, replacement, last)
    torch.testing.assert_close(estimate, exact, atol=1e-4, rtol=1e-4)
    assert exact[:-1].abs().max() > 1e-2  # the heads really do something


def test_attribution_ranks_components_like_exact_ablation() -> None:
    adapter = adapter_for(tiny_model("gpt2", seed=4, n_layers=3))
    base = make_batch(n=16, seed=5)
    replacement = Replacement(Ablation.ZERO, None, n_base=len(base))
    comps = adapter.components()
    exact = (exact_sweep(adapter, base, replacement, comps) - read_metric(adapter, base)).mean(1)
    estimate = attribution_effects(adapter, base, replacement, comps, micro_batch=5).mean(1)
    assert spearmanr(exact.numpy(), estimate.numpy()).statistic > 0.8
