"""The fast exact sweep (prefix reuse, trimmed positions, stacked variants) equals one pass per component.

Three-layer tiny models of every family, prompts of many lengths (so prompts are chunked by
width), right and left padding, budgets from one row per pass to everything in one pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuitdiff.interventions import exact as exact_module
from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.readout import read_metric
from circuitdiff.interventions.hooks import Patch, hooked
from circuitdiff.interventions.prefix import needed_width
from circuitdiff.interventions.exact import bytes_per_row, exact_sweep, plan_sweep, record_activations, rows_per_forward
from circuitdiff.models.loading import LoadedModel, load_model
from tiny_models import CORE_FAMILIES, VOCAB, save_tiny


def ragged_batch(n: int = 14, seq: int = 11, seed: int = 0, left_pad: bool = False) -> Batch:
    """Prompts of lengths seq-6 .. seq, padded with id 0 on the right (or the left)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(seq - 6, seq + 1, (n,), generator=gen)
    pos = torch.arange(seq)[None, :]
    mask = (pos >= seq - lengths[:, None]) if left_pad else (pos < lengths[:, None])
    ids = torch.randint(4, VOCAB, (n, seq), generator=gen) * mask
    start = seq - lengths if left_pad else torch.zeros_like(lengths)
    offset = (torch.rand(n, generator=gen) * lengths).long()  # anywhere in the prompt ...
    offset[::2] = lengths[::2] - 1  # ... or at its last token, as in most tasks
    read = start + offset
    answer = torch.randint(4, VOCAB, (n,), generator=gen)
    return Batch(ids, mask.long(), read, answer, (answer + 1 - 4) % (VOCAB - 4) + 4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=CORE_FAMILIES)
def lm(request, tmp_path_factory) -> LoadedModel:
    folder = save_tiny(request.param, tmp_path_factory.mktemp(request.param), seed=11, n_layers=3)
    return load_model(str(folder))


def one_at_a_time(lm: LoadedModel, base: Batch, replacement: Replacement) -> torch.Tensor:
    rows = torch.arange(len(base))
    return torch.stack(
        [read_metric(lm.adapter, base, [Patch(c, rows, replacement.values(c, rows))]) for c in lm.adapter.components()]
    )


def setup(lm: LoadedModel, ablation: Ablation, left_pad: bool = False) -> tuple[Batch, Replacement]:
    base = ragged_batch(seed=1, left_pad=left_pad)
    other = ragged_batch(seed=2, left_pad=left_pad)
    other = Batch(other.input_ids, base.attention_mask, base.read_pos, base.answer_ids, base.distractor_ids)
    if ablation.base_is_corrupted:
        base, other = other, base
    return base, Replacement(ablation, record_activations(lm.adapter, other), n_base=len(base), seed=3)


@pytest.fixture
def split_by_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny models: let every width change start a new chunk, as long prompts sets do at scale."""
    monkeypatch.setattr(exact_module, "MIN_PASS_TOKENS", 1)


@pytest.mark.parametrize("ablation", list(Ablation), ids=lambda a: a.value)
def test_fast_sweep_equals_one_pass_per_component(lm: LoadedModel, ablation: Ablation, split_by_width: None) -> None:
    base, replacement = setup(lm, ablation)
    reference = one_at_a_time(lm, base, replacement)
    components = lm.adapter.components()
    seq = base.input_ids.shape[1]
    assert len({c.width for c in plan_sweep(lm.adapter, base, components)}) > 2  # trimmed to several widths
    budgets = [1 << 30, 7 * bytes_per_row(lm.adapter, seq)]  # all at once; variants split over passes
    for budget in budgets:
        fast = exact_sweep(lm.adapter, base, replacement, components, memory_budget=budget)
        torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0, msg=lambda m: f"budget {budget}: {m}")
    assert (reference - read_metric(lm.adapter, base)).abs().amax(1).gt(1e-6).float().mean() > 0.5


def test_left_padding(lm: LoadedModel, split_by_width: None) -> None:
    base, replacement = setup(lm, Ablation.MEAN, left_pad=True)
    fast = exact_sweep(lm.adapter, base, replacement, lm.adapter.components())
    torch.testing.assert_close(fast, one_at_a_time(lm, base, replacement), atol=1e-5, rtol=0)


def test_subset_of_components_in_any_order(lm: LoadedModel) -> None:
    base, replacement = setup(lm, Ablation.ZERO)
    components = lm.adapter.components()
    reference = one_at_a_time(lm, base, replacement)
    order = [7, 2, 14, 0, 9]
    fast = exact_sweep(lm.adapter, base, replacement, [components[i] for i in order])
    torch.testing.assert_close(fast, reference[order], atol=1e-5, rtol=0)


def test_prefix_blocks_are_not_recomputed(lm: LoadedModel, split_by_width: None) -> None:
    base, replacement = setup(lm, Ablation.ZERO)
    last = [c for c in lm.adapter.components() if c.layer == lm.adapter.n_layers - 1]
    calls = {"first": 0, "last": 0}
    hooks = [
        lm.adapter.attn_out(0).register_forward_pre_hook(lambda *_: calls.__setitem__("first", calls["first"] + 1)),
        lm.adapter.attn_out(lm.adapter.n_layers - 1).register_forward_pre_hook(
            lambda *_: calls.__setitem__("last", calls["last"] + 1)
        ),
    ]
    try:
        exact_sweep(lm.adapter, base, replacement, last)
    finally:
        for h in hooks:
            h.remove()
    n_chunks = len(plan_sweep(lm.adapter, base, last))
    assert calls["first"] == n_chunks  # only the clean prefix pass of each chunk
    assert calls["last"] == n_chunks  # only the ablated passes (the prefix pass stops before the last layer)


def test_model_is_restored_even_after_an_error(lm: LoadedModel) -> None:
    base, _ = setup(lm, Ablation.ZERO)
    bad = Replacement(Ablation.ZERO, None, n_base=len(base))
    bad.values = lambda c, p: torch.zeros(len(p), 3, 2)  # wrong shape: the hook fails mid-sweep
    components = [c for c in lm.adapter.components() if c.layer == 2]
    with pytest.raises(RuntimeError):
        exact_sweep(lm.adapter, base, bad, components)
    assert not any("forward" in m.__dict__ for m in lm.model.modules())
    assert lm.model.config._attn_implementation == "eager"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())


def test_plan_covers_every_component_and_prompt_once_within_budget(lm: LoadedModel) -> None:
    base = ragged_batch(n=37, seed=4)
    components = lm.adapter.components()
    budget = 40 * bytes_per_row(lm.adapter, base.input_ids.shape[1])
    seen = torch.zeros(len(components), len(base), dtype=torch.long)
    for chunk in plan_sweep(lm.adapter, base, components, budget):
        assert chunk.width >= int(needed_width(lm.adapter, base)[chunk.prompts].max())
        for layer, idx in chunk.groups:
            assert all(components[i].layer == layer for i in idx)
            assert len(idx) * len(chunk.prompts) <= max(len(chunk.prompts), rows_per_forward(lm.adapter, chunk.width, budget))
            seen[torch.tensor(idx)[:, None], chunk.prompts[None, :]] += 1
    assert torch.equal(seen, torch.ones_like(seen))


def test_needed_width_causal_stops_at_read_position_bidirectional_at_last_token(lm: LoadedModel) -> None:
    base = ragged_batch(seed=5)
    width = needed_width(lm.adapter, base)
    if lm.adapter.masked_lm:
        assert torch.equal(width, base.attention_mask.sum(1))
    else:
        assert torch.equal(width, base.read_pos + 1)


def plain_hooks_zero_ablation(model: torch.nn.Module, base: Batch, n_heads: int) -> torch.Tensor:
    """Independent reference on a GPT-2: one full forward per component, ablated by plain torch hooks.

    A head is zeroed as its slice of the input to ``attn.c_proj``, an MLP by zeroing the MLP's output.
    """
    rows = torch.arange(len(base))
    out = []
    for block in model.transformer.h:
        width = block.attn.c_proj.weight.shape[0] // n_heads
        zero_head = lambda h: (lambda _m, args: (args[0].index_fill(-1, torch.arange(h * width, (h + 1) * width), 0.0),))
        targets = [(block.attn.c_proj.register_forward_pre_hook, zero_head(h)) for h in range(n_heads)]
        targets.append((block.mlp.register_forward_hook, lambda _m, _a, output: torch.zeros_like(output)))
        for register, hook in targets:
            handle = register(hook)
            try:
                with torch.no_grad():
                    logits = model(input_ids=base.input_ids, attention_mask=base.attention_mask).logits
            finally:
                handle.remove()
            at = logits[rows, base.read_pos]
            out.append(at[rows, base.answer_ids] - at[rows, base.distractor_ids])
    return torch.stack(out)


def test_sweep_bucketed_by_width_equals_padded_sweep_and_plain_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default bucketing, prompts of mixed widths run in several trimmed buckets and every value
    equals the sweep padded to the widest prompt and an independent one-forward-per-component loop."""
    lm = load_model(str(save_tiny("gpt2", tmp_path / "gpt2", seed=5, n_layers=3)))
    base = ragged_batch(n=96, seq=12, seed=6)
    components = lm.adapter.components()
    zero = Replacement(Ablation.ZERO, None, n_base=len(base))
    plan = plan_sweep(lm.adapter, base, components)
    widths = needed_width(lm.adapter, base)
    padded_tokens = sum(len(c.prompts) * c.width for c in plan)
    assert len(plan) > 2 and padded_tokens < len(base) * int(widths.max())  # bucketed: less padding
    bucketed = exact_sweep(lm.adapter, base, zero, components)
    monkeypatch.setattr(exact_module, "MIN_PASS_TOKENS", 1 << 40)  # one bucket: every prompt padded to the widest
    [single] = plan_sweep(lm.adapter, base, components)
    assert single.width == int(widths.max())
    padded = exact_sweep(lm.adapter, base, zero, components)
    reference = plain_hooks_zero_ablation(lm.model, base, lm.adapter.n_heads)
    torch.testing.assert_close(bucketed, padded, atol=1e-5, rtol=0)
    torch.testing.assert_close(bucketed, reference, atol=1e-5, rtol=0)
    assert (reference - reference.mean(0)).abs().max() > 1e-3  # the components' effects differ


def test_last_mlp_runs_at_read_positions_only_and_every_value_equals_the_full_forward(lm: LoadedModel) -> None:
    """The last block's MLP computes one position per row in sweep passes (so the saving is real), while
    every ablated metric equals the model's own full forward (all positions, full logits) under the
    same patch, and a recording pass still sees every position."""
    base, replacement = setup(lm, Ablation.MEAN)
    rows = torch.arange(len(base))
    reference = []
    for c in lm.adapter.components():
        with torch.no_grad(), hooked(lm.adapter, [Patch(c, rows, replacement.values(c, rows))]):
            logits = lm.model(input_ids=base.input_ids, attention_mask=base.attention_mask).logits[rows, base.read_pos]
        reference.append(logits[rows, base.answer_ids] - logits[rows, base.distractor_ids])
    last, first = lm.adapter.n_layers - 1, 0
    widths: dict[int, set[int]] = {last: set(), first: set()}
    handles = [lm.adapter.mlp_down(l).register_forward_pre_hook(lambda _m, a, l=l: widths[l].add(a[0].shape[1]))
               for l in widths]
    try:
        fast = exact_sweep(lm.adapter, base, replacement, lm.adapter.components())
        assert widths[last] == {1} and max(widths[first]) > 1
        widths[last].clear()
        record_activations(lm.adapter, base)
        assert widths[last] == {base.input_ids.shape[1]}
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(fast, torch.stack(reference), atol=1e-5, rtol=0)
