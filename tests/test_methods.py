"""--method exact | attribution | hybrid: what each returns, and that hybrid is exact where it says."""

from __future__ import annotations

import pytest
import torch

from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.attribution import attribution_effects
from circuitdiff.interventions.readout import read_metric
from circuitdiff.interventions.methods import Method, ablated_metrics
from circuitdiff.interventions.exact import bytes_per_row, exact_sweep, record_activations
from circuitdiff.models.loading import LoadedModel, load_model
from test_adapters import make_batch
from tiny_models import CORE_FAMILIES, save_tiny


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=CORE_FAMILIES)
def lm(request, tmp_path_factory) -> LoadedModel:
    return load_model(str(save_tiny(request.param, tmp_path_factory.mktemp(request.param), seed=8, n_layers=3)))


def mean_replacement(lm: LoadedModel, n: int = 10) -> tuple:
    base = make_batch(n=n, seed=1)
    return base, Replacement(Ablation.MEAN, record_activations(lm.adapter, make_batch(n=n, seed=2)), n_base=n)


def test_attribution_method_is_estimate_plus_baseline(lm: LoadedModel) -> None:
    base, replacement = mean_replacement(lm)
    comps = lm.adapter.components()
    got = ablated_metrics(lm.adapter, base, replacement, comps, Method.ATTRIBUTION)
    expected = attribution_effects(lm.adapter, base, replacement, comps) + read_metric(lm.adapter, base)[None, :]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # a budget that allows one prompt per forward+backward gives the same estimates
    one = attribution_effects(lm.adapter, base, replacement, comps, memory_budget=1)
    torch.testing.assert_close(one + read_metric(lm.adapter, base)[None, :], got, atol=1e-5, rtol=0)


def test_hybrid_is_exact_on_the_top_k_and_attribution_elsewhere(lm: LoadedModel) -> None:
    base, replacement = mean_replacement(lm)
    comps = lm.adapter.components()
    k = 4
    estimate = ablated_metrics(lm.adapter, base, replacement, comps, Method.ATTRIBUTION)
    exact = exact_sweep(lm.adapter, base, replacement, comps)
    ticks: list[float] = []
    hybrid = ablated_metrics(lm.adapter, base, replacement, comps, "hybrid", exact_top=k, progress=ticks.append)
    baseline = read_metric(lm.adapter, base)
    top = torch.argsort((estimate - baseline).mean(1).abs(), descending=True)[:k]
    rest = torch.tensor([i for i in range(len(comps)) if i not in top.tolist()])
    torch.testing.assert_close(hybrid[top], exact[top], atol=1e-5, rtol=0)
    torch.testing.assert_close(hybrid[rest], estimate[rest], atol=1e-5, rtol=0)
    assert sum(ticks) == pytest.approx(len(comps))


def test_hybrid_over_everything_is_exact(lm: LoadedModel) -> None:
    base, replacement = mean_replacement(lm, n=6)
    comps = lm.adapter.components()
    hybrid = ablated_metrics(lm.adapter, base, replacement, comps, Method.HYBRID, exact_top=len(comps))
    exact = ablated_metrics(lm.adapter, base, replacement, comps, Method.EXACT)
    torch.testing.assert_close(hybrid, exact, atol=1e-5, rtol=0)


def test_exact_progress_adds_up_to_the_component_count(lm: LoadedModel) -> None:
    base, replacement = mean_replacement(lm)
    comps = lm.adapter.components()
    ticks: list[float] = []
    budget = 5 * bytes_per_row(lm.adapter, base.input_ids.shape[1])
    ablated_metrics(lm.adapter, base, replacement, comps, Method.EXACT, memory_budget=budget, progress=ticks.append)
    assert len(ticks) > 1 and sum(ticks) == pytest.approx(len(comps))
