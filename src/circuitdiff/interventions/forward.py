"""One hooked forward pass read out at the metric position only.

The LM head is applied to one position per prompt, and for the logit difference only
to the answer and distractor rows of the unembedding: exact, and it avoids a
(batch, seq, vocab) tensor that would dominate memory in a sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from circuitdiff.interventions.hooks import Patch, hooked, last_mlp_at
from circuitdiff.models.adapters.base import Adapter


@dataclass(frozen=True)
class Batch:
    """Token inputs and what the metric reads: one row per prompt (or per prompt copy)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    read_pos: torch.Tensor
    answer_ids: torch.Tensor
    distractor_ids: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, rows: torch.Tensor) -> Batch:
        return Batch(*(t[rows] for t in self._tensors()))

    def repeat(self, k: int) -> Batch:
        """k stacked copies along the batch dimension (variant-major)."""
        return Batch(*(t.repeat(k, *([1] * (t.dim() - 1))) for t in self._tensors()))

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.input_ids, self.attention_mask, self.read_pos, self.answer_ids, self.distractor_ids)


def read_hidden(adapter: Adapter, batch: Batch) -> torch.Tensor:
    """Final hidden state at each row's read position, (rows, d_model)."""
    hidden = adapter.final_hidden(batch.input_ids, batch.attention_mask)
    return hidden[torch.arange(len(batch), device=hidden.device), batch.read_pos]


@torch.no_grad()
def logit_difference(adapter: Adapter, batch: Batch, patches: Sequence[Patch] = ()) -> torch.Tensor:
    """Per-row logit difference (answer - distractor) under the given patches; the last MLP runs at the
    read positions only (``last_mlp_at``)."""
    with last_mlp_at(adapter, batch.read_pos), hooked(adapter, patches):
        h = read_hidden(adapter, batch)
    return adapter.logit_difference(h, batch.answer_ids, batch.distractor_ids).float()


def differentiable_logit_difference(adapter: Adapter, batch: Batch) -> torch.Tensor:
    """``logit_difference`` with its autograd graph kept: for gradients through activations that hooks
    write (e.g. a dictionary's latents spliced in, ``circuitdiff.features``). The same read-out, not a copy."""
    with torch.enable_grad():
        return logit_difference.__wrapped__(adapter, batch)
