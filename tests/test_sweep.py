"""Batched sweeps equal one-at-a-time ablation, for every ablation type and family."""

from __future__ import annotations

import pytest
import torch

from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.readout import read_metric
from circuitdiff.interventions.hooks import Patch
from circuitdiff.interventions.exact import exact_sweep, record_activations
from circuitdiff.models.loading import LoadedModel, load_model
from test_adapters import make_batch
from tiny_models import CORE_FAMILIES, save_tiny


@pytest.fixture(scope="module", params=CORE_FAMILIES)
def lm(request, tmp_path_factory) -> LoadedModel:
    return load_model(str(save_tiny(request.param, tmp_path_factory.mktemp(request.param), seed=5)))


@pytest.mark.parametrize("ablation", list(Ablation), ids=lambda a: a.value)
def test_batched_sweep_equals_one_at_a_time(lm: LoadedModel, ablation: Ablation) -> None:
    clean, corrupted = make_batch(seed=1), make_batch(seed=2)
    corrupted = type(clean)(corrupted.input_ids, clean.attention_mask, clean.read_pos, clean.answer_ids, clean.distractor_ids)
    reference_batch, base = (clean, corrupted) if ablation.base_is_corrupted else (corrupted, clean)
    reference = record_activations(lm.adapter, reference_batch)
    replacement = Replacement(ablation, reference, n_base=len(base), seed=0)
    components = lm.adapter.components()
    batched = exact_sweep(lm.adapter, base, replacement, components)
    tiny_budget = exact_sweep(lm.adapter, base, replacement, components, memory_budget=1)  # one row per pass
    rows = torch.arange(len(base))
    single = torch.stack(
        [read_metric(lm.adapter, base, [Patch(c, rows, replacement.values(c, rows))]) for c in components]
    )
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny_budget, single, atol=1e-5, rtol=0)
    baseline = read_metric(lm.adapter, base)
    assert (single - baseline).abs().amax(1).gt(1e-6).float().mean() > 0.5, "most ablations should move the metric"


def test_mean_ablation_is_per_position_mean_over_real_tokens(lm: LoadedModel) -> None:
    ref = make_batch(seed=3)
    cache = record_activations(lm.adapter, ref)
    replacement = Replacement(Ablation.MEAN, cache, n_base=2)
    from circuitdiff.models.components import Component

    c = Component(1, 1)
    values = replacement.values(c, torch.arange(2))
    acts, mask = cache.of(c), ref.attention_mask.bool()
    for pos in range(acts.shape[1]):
        real = mask[:, pos]
        expected = acts[real, pos].mean(0) if real.any() else acts[mask].mean(0)
        torch.testing.assert_close(values[0, pos], expected, atol=1e-6, rtol=0)
    assert torch.equal(values[0], values[1])


def test_resample_uses_real_reference_prompts(lm: LoadedModel) -> None:
    ref = make_batch(seed=4)
    cache = record_activations(lm.adapter, ref)
    replacement = Replacement(Ablation.RESAMPLE, cache, n_base=6, seed=7)
    from circuitdiff.models.components import Component

    c = Component(0, None)
    values = replacement.values(c, torch.arange(6))
    for i, src in enumerate(replacement._source.tolist()):
        real = ref.attention_mask[src].bool()
        assert torch.equal(values[i][real], cache.of(c)[src][real])
