"""The batch every pass runs: token inputs and what the metric reads (``readout`` reads it).

A one-token task has one row per prompt. A multi-token task has two per prompt, branch-major:
rows 0..n-1 hold each prompt followed by its answer's tokens but the last (the answer branch),
rows n..2n-1 the same with the distractor's, and ``targets`` the continuation tokens each row
is scored on. Prompt indices (``len``, ``select``, ``repeat``) count prompts, not rows;
``rows_of`` maps them to rows, for patches and replacement values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    """Token inputs and what the metric reads: ``branches`` rows per prompt (or per prompt copy).

    ``targets`` (rows, t) long, -1 padded: the tokens teacher-forced from ``read_pos`` on, scored by
    log-probability (answer branch +, distractor branch -); None for a one-token batch, whose metric is
    the logit difference of ``answer_ids`` and ``distractor_ids`` at ``read_pos``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    read_pos: torch.Tensor
    answer_ids: torch.Tensor
    distractor_ids: torch.Tensor
    targets: torch.Tensor | None = None
    branches: int = 1

    def __len__(self) -> int:
        """The number of prompts (rows / branches)."""
        return int(self.input_ids.shape[0]) // self.branches

    def rows_of(self, prompts: torch.Tensor) -> torch.Tensor:
        """The rows of ``prompts``, branch-major: (branches * len(prompts),)."""
        if self.branches == 1:
            return prompts
        n = len(self)
        return torch.cat([b * n + prompts for b in range(self.branches)])

    def select(self, prompts: torch.Tensor) -> Batch:
        rows = self.rows_of(prompts)
        return self._with(lambda t: t[rows])

    def repeat(self, k: int) -> Batch:
        """k stacked copies of every prompt (variant-major within each branch)."""
        b = self.branches
        return self._with(lambda t: t.view(b, -1, *t.shape[1:]).repeat(1, k, *([1] * (t.dim() - 1))).flatten(0, 1))

    def to(self, device: torch.device | str) -> Batch:
        return self._with(lambda t: t.to(device))

    def trim(self, width: int) -> Batch:
        """The first ``width`` positions of every row (read positions must lie inside)."""
        if width >= self.input_ids.shape[1]:
            return self
        return dataclasses.replace(self, input_ids=self.input_ids[:, :width],
                                   attention_mask=self.attention_mask[:, :width])

    def branch_signs(self) -> torch.Tensor:
        """(rows,) float: +1 on answer-branch rows, -1 on distractor-branch rows."""
        n = len(self)
        return torch.cat([torch.ones(n), -torch.ones(n * (self.branches - 1))]).to(self.input_ids.device)

    def _with(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """``fn`` applied to every tensor field (``targets`` too when set)."""
        changes = {f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), torch.Tensor)}
        return dataclasses.replace(self, **changes)
