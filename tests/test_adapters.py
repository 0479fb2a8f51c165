"""Ground truth for every adapter: hooks change exactly what they target, nothing else."""

from __future__ import annotations

import copy

import pytest
import torch

from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.readout import read_metric
from circuitdiff.interventions.hooks import Patch, hooked
from circuitdiff.models.adapters.base import zero_head_in_weights
from circuitdiff.models.components import Component
from circuitdiff.models.loading import LoadedModel, load_model
from tiny_models import FAMILIES, VOCAB, save_tiny


def make_batch(n: int = 6, seq: int = 9, seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (n, seq), generator=gen)
    lengths = torch.randint(seq - 3, seq + 1, (n,), generator=gen)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # right padding with pad id 0
    answer = torch.randint(4, VOCAB, (n,), generator=gen)
    return Batch(ids, mask, lengths - 1, answer, (answer + 1 - 4) % (VOCAB - 4) + 4)


@pytest.fixture(scope="module", params=FAMILIES)
def lm(request, tmp_path_factory) -> LoadedModel:
    folder = save_tiny(request.param, tmp_path_factory.mktemp(request.param))
    return load_model(str(folder))


def read_hidden(adapter, batch: Batch) -> torch.Tensor:  # noqa: ANN001
    """The final hidden state at each row's read position, (rows, d_model)."""
    return adapter.final_hidden(batch.input_ids, batch.attention_mask)[torch.arange(len(batch)), batch.read_pos]


def plain_logits(lm: LoadedModel, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return logits[torch.arange(len(batch)), batch.read_pos]


def test_registry_picks_family(lm: LoadedModel) -> None:
    assert lm.model.config.model_type in lm.adapter.model_types
    assert len(lm.adapter.components()) == lm.adapter.n_layers * (lm.adapter.n_heads + 1)
    if lm.adapter.family == "llama":
        assert lm.adapter.grouped_query_attention
    paths = lm.adapter.module_paths()
    assert list(paths) == [c.name for c in lm.adapter.components()]
    for path in paths.values():  # every documented hook point is a real module
        lm.model.get_submodule(path.split(" ")[0])


def test_hooked_forward_equals_plain_forward(lm: LoadedModel) -> None:
    batch = make_batch()
    with torch.no_grad(), hooked(lm.adapter, record=True) as rec:
        hooked_logits = plain_logits(lm, batch)
    assert len(rec.heads) == len(rec.mlps) == lm.adapter.n_layers
    assert torch.equal(hooked_logits, plain_logits(lm, batch))


def test_patching_recorded_values_back_is_bit_identical(lm: LoadedModel) -> None:
    """Exercises the indexed write path: writing each activation's own value changes nothing."""
    batch = make_batch()
    rows = torch.arange(len(batch))
    with torch.no_grad(), hooked(lm.adapter, record=True) as rec:
        plain = plain_logits(lm, batch)
    patches = [Patch(c, rows, rec.get(c).clone()) for c in lm.adapter.components()]
    with torch.no_grad(), hooked(lm.adapter, patches):
        assert torch.equal(plain_logits(lm, batch), plain)


def test_read_out_at_metric_position_matches_full_logits(lm: LoadedModel) -> None:
    batch = make_batch()
    with torch.no_grad():
        read = lm.adapter.logits(read_hidden(lm.adapter, batch))
    torch.testing.assert_close(read, plain_logits(lm, batch), atol=1e-5, rtol=0)


def test_two_row_logit_difference_matches_full_logits(lm: LoadedModel) -> None:
    batch = make_batch()
    full = plain_logits(lm, batch)
    rows = torch.arange(len(batch))
    expected = full[rows, batch.answer_ids] - full[rows, batch.distractor_ids]
    torch.testing.assert_close(read_metric(lm.adapter, batch), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer,head", [(0, 0), (1, 3)])
def test_zero_head_hook_equals_zeroed_output_projection(lm: LoadedModel, layer: int, head: int) -> None:
    batch = make_batch()
    rows = torch.arange(len(batch))
    ablated = read_metric(lm.adapter, batch, [Patch(Component(layer, head), rows)])
    twin = copy.deepcopy(lm.model)
    twin_adapter = type(lm.adapter)(twin)
    zero_head_in_weights(twin_adapter.attn_out(layer), head, lm.adapter.d_head)
    torch.testing.assert_close(ablated, read_metric(twin_adapter, batch), atol=1e-5, rtol=0)
    assert not torch.allclose(ablated, read_metric(lm.adapter, batch), atol=1e-4)


@pytest.mark.parametrize("component", [Component(1, 2), Component(0, None), Component(1, None)], ids=str)
def test_patch_changes_its_target_and_nothing_else(lm: LoadedModel, component: Component) -> None:
    batch = make_batch()
    seq = batch.input_ids.shape[1]
    d = lm.adapter.d_model if component.head is None else lm.adapter.d_head
    target_rows = torch.tensor([1, 4])
    values = torch.randn(len(target_rows), seq, d, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        with hooked(lm.adapter, record=True) as before:
            h0 = read_hidden(lm.adapter, batch)
        with hooked(lm.adapter, [Patch(component, target_rows, values)], record=True) as after:
            h1 = read_hidden(lm.adapter, batch)
    other = torch.tensor([r for r in range(len(batch)) if r not in target_rows.tolist()])
    # the target now holds the values on the target rows, and is untouched elsewhere
    assert torch.equal(after.get(component)[target_rows], values)
    assert torch.equal(after.get(component)[other], before.get(component)[other])
    # rows without a patch are bit-identical: batched variants do not leak into each other
    assert torch.equal(h1[other], h0[other])
    assert not torch.allclose(h1[target_rows], h0[target_rows])
    # other heads of the same layer and everything upstream are untouched
    layer = component.layer
    if component.head is not None:
        others = [h for h in range(lm.adapter.n_heads) if h != component.head]
        assert torch.equal(after.heads[layer][:, :, others], before.heads[layer][:, :, others])
    for up in range(layer):
        assert torch.equal(after.heads[up], before.heads[up]) and torch.equal(after.mlps[up], before.mlps[up])


def test_unsupported_architecture_is_named(tmp_path) -> None:
    import transformers as T

    from circuitdiff.errors import UnsupportedArchitectureError
    from tiny_models import word_tokenizer

    T.BloomForCausalLM(T.BloomConfig(n_layer=1, hidden_size=16, n_head=2, vocab_size=VOCAB)).save_pretrained(tmp_path)
    word_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="unsupported architecture 'bloom'.*gpt2"):
        load_model(str(tmp_path))
