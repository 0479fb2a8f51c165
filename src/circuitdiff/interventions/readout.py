"""The read-out: the one place where a pass's final hidden states become the task metric.

An effect is a difference of two metrics (ablated minus clean), so both must be formed the same
way or the difference carries an offset that no component caused. Every pass that reads the metric
goes through ``metric`` here: the clean pass (``pipeline.clean_pass``), exact sweeps, circuit
evaluation, exact edges, attribution, EAP and EAP-IG (as the objective they differentiate), the
calibrated null and the lab's evaluation. The metric is formed in float32 from
``Adapter.logits`` (the hidden state and the unembedding rows upcast, whatever the model's dtype;
a family with a non-linear read-out overrides that method), and every pass that reads it runs the
same kernels (``kernels.fast_kernels``; the clean pass reads attention weights in a separate eager
pass). With both, a component whose output weights are zero, or one patched with its own clean
activation, reads exactly the clean metric, in float32, float16 and bfloat16
(``tests/test_readout.py``).

What is read is a property of the batch: ``read_positions`` says where each row's metric is read,
and ``metric`` takes the final hidden states of every position, so a metric that reads several
positions per row (multi-token answers) changes this module and ``Batch``, not its callers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.hooks import Patch, hooked, last_mlp_at
from circuitdiff.models.adapters.base import Adapter


def read_positions(batch: Batch) -> torch.Tensor:
    """Where each row's metric is read, (rows,): the last prompt token (causal) or the mask."""
    return batch.read_pos


def _at_read(batch: Batch, hidden: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(len(batch), device=hidden.device)
    return hidden[rows, read_positions(batch).to(hidden.device)]


def metric(adapter: Adapter, batch: Batch, hidden: torch.Tensor) -> torch.Tensor:
    """Per-row metric, float32 (rows,): logit(answer) - logit(distractor) at the read position.

    ``hidden``: the final hidden states (the LM head's input), (rows, seq, d_model). Only the
    answer and distractor rows of the unembedding are read.
    """
    vocab = torch.stack([batch.answer_ids, batch.distractor_ids], dim=-1).to(hidden.device)
    logits = adapter.logits(_at_read(batch, hidden), vocab=vocab)
    return logits[..., 0] - logits[..., 1]


def answer_probability(adapter: Adapter, batch: Batch, hidden: torch.Tensor) -> torch.Tensor:
    """Per-row probability of the answer over the whole vocabulary at the read position, float32 (rows,)."""
    logits = adapter.logits(_at_read(batch, hidden))
    return logits.softmax(-1).gather(-1, batch.answer_ids.to(logits.device)[:, None])[:, 0]


@torch.no_grad()
def read_metric(adapter: Adapter, batch: Batch, patches: Sequence[Patch] = ()) -> torch.Tensor:
    """Per-row metric of one hooked forward pass under ``patches``, float32 (rows,).

    The last block's MLP runs at the read positions only (``last_mlp_at``: nothing else reaches
    the metric). Callers that compare it with other passes run it inside ``fast_kernels``.
    """
    with last_mlp_at(adapter, read_positions(batch)), hooked(adapter, patches):
        hidden = adapter.final_hidden(batch.input_ids, batch.attention_mask)
    return metric(adapter, batch, hidden)
