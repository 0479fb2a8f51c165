"""The batch every pass runs: token inputs and what the metric reads (``readout`` reads it)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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

