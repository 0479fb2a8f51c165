"""Start a forward pass at layer L by reusing the clean prefix, without re-implementing the model.

An ablation at layer L cannot change blocks 0..L-1, so their clean outputs can be reused.
We record each block's exact return value in one clean pass (a forward hook per block),
then, for a pass whose variants all ablate layer L, temporarily replace the ``forward`` of
blocks 0..L-1 by a function that returns block L-1's cached output (repeated for the k
stacked variants). The model's own outer loop (embeddings, masks, rotary embeddings,
final norm) still runs, so every family works unchanged.

Positions that cannot influence the read position are trimmed first: in a causal model
everything after the read position, in a bidirectional one the right padding (masked keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from circuitdiff.interventions.forward import Batch
from circuitdiff.models.adapters.base import Adapter


def needed_width(adapter: Adapter, batch: Batch) -> torch.Tensor:
    """Per row, how many leading positions the metric depends on, (rows,) long.

    Causal: positions up to the read position. Bidirectional: up to the last real token
    (masked padding beyond it is invisible to real tokens), and at least the read position.
    """
    need = last_read(batch) + 1
    if batch.branches > 1:  # a prompt needs what its widest branch needs
        need = need.view(batch.branches, -1).amax(0)
    if adapter.masked_lm:
        seq = batch.attention_mask.shape[1]
        pos = torch.arange(1, seq + 1, device=batch.attention_mask.device)
        last_real = (batch.attention_mask.ne(0).long() * pos).amax(1)
        need = torch.maximum(need, last_real)
    return need


def last_read(batch: Batch) -> torch.Tensor:
    """Per row, the last position the metric reads, (rows,) long: the read position, or the last
    continuation position of a multi-token batch."""
    pos = batch.read_pos.to(torch.long)
    if batch.targets is not None:
        pos = pos + batch.targets.ge(0).sum(1).to(pos.device) - 1
    return pos


def trim(batch: Batch, width: int) -> Batch:
    """The first ``width`` positions of every row (read positions must lie inside)."""
    return batch.trim(width)


def repeat_rows(value: Any, k: int, branches: int = 1) -> Any:
    """A block's return value (tensor, tuple or None) with every batch-first tensor repeated k times,
    in ``Batch.repeat``'s row order (variant-major within each branch)."""
    if isinstance(value, torch.Tensor):
        if k == 1:
            return value
        return value.view(branches, -1, *value.shape[1:]).repeat(1, k, *([1] * (value.dim() - 1))).flatten(0, 1)
    if isinstance(value, tuple):
        return tuple(repeat_rows(v, k, branches) for v in value)
    return value


class _Stop(Exception):
    """Everything needed is recorded: skip the rest of the model."""


def _stop(_module: torch.nn.Module, _args: tuple, _output: Any) -> None:
    raise _Stop


@torch.no_grad()
def block_outputs(adapter: Adapter, batch: Batch, layers: Iterable[int]) -> dict[int, Any]:
    """Exact return value of each block in ``layers`` on a clean pass over ``batch``."""
    wanted = sorted(set(layers))
    if not wanted:
        return {}
    outputs: dict[int, Any] = {}
    blocks = adapter.blocks()
    handles = [
        blocks[i].register_forward_hook(lambda _m, _a, out, i=i: outputs.__setitem__(i, out)) for i in wanted
    ]
    handles.append(blocks[wanted[-1]].register_forward_hook(_stop))
    try:
        adapter.base_forward(batch.input_ids, batch.attention_mask)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return outputs


@contextmanager
def start_at(adapter: Adapter, layer: int, prefix_output: Any) -> Iterator[None]:
    """Inside the ``with`` block, blocks 0..layer-1 return ``prefix_output`` instead of computing.

    ``prefix_output`` must be block ``layer - 1``'s clean return value for the batch that is
    run (already repeated for stacked variants). Each block's own ``forward`` is restored
    in ``finally``, including one that a library (e.g. accelerate) had set on the instance.
    """
    if layer <= 0:
        yield
        return
    blocks = [adapter.blocks()[i] for i in range(layer)]
    saved = [b.__dict__.get("forward") for b in blocks]

    def skipped(*_args: Any, **_kwargs: Any) -> Any:
        return prefix_output

    try:
        for b in blocks:
            b.forward = skipped  # type: ignore[method-assign]
        yield
    finally:
        for b, old in zip(blocks, saved):
            if old is None:
                b.__dict__.pop("forward", None)
            else:
                b.forward = old  # type: ignore[method-assign]
