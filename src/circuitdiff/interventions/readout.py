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
and ``metric`` takes the final hidden states of every position. A multi-token task (``Batch``
with two branches) reads every continuation position of both branches and returns one value per
prompt: the difference of the answer's and the distractor's teacher-forced summed log-probabilities.
For one-token tasks that is the logit difference (the log-sum-exp cancels), computed as such.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.hooks import Patch, hooked, last_mlp_at
from circuitdiff.models.adapters.base import Adapter


def read_positions(batch: Batch) -> torch.Tensor:
    """Where each row's metric is read: (rows,) for a one-token batch (the last prompt token, or the
    mask), (rows, t) for a multi-token one (the read position and the continuation positions; a row
    with fewer targets repeats its last one, which the metric masks out)."""
    if batch.targets is None:
        return batch.read_pos
    steps = torch.arange(batch.targets.shape[1], device=batch.read_pos.device)
    count = batch.targets.ge(0).sum(1).to(batch.read_pos.device)
    return batch.read_pos[:, None] + torch.minimum(steps[None, :], count[:, None] - 1)


def _at_read(batch: Batch, hidden: torch.Tensor) -> torch.Tensor:
    pos = read_positions(batch).to(hidden.device)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows[:, None], pos] if pos.dim() == 2 else hidden[rows, pos]


LOGITS_PER_CHUNK = 1 << 24
"""Full-vocabulary logits formed at once by ``continuation_logprobs`` (64 MiB of float32)."""


def continuation_logprobs(adapter: Adapter, batch: Batch, hidden: torch.Tensor) -> torch.Tensor:
    """Per row, the summed teacher-forced log-probability of its targets, float32 (rows,).

    log p(t_k | prompt, t_<k) at position read_pos + k, from the full vocabulary's log-softmax,
    formed in chunks of positions so that k variants x rows x targets x vocabulary never sit in memory.
    """
    assert batch.targets is not None
    h = _at_read(batch, hidden)  # (rows, t, d)
    targets = batch.targets.to(hidden.device)
    flat_h, flat_t = h.flatten(0, 1), targets.flatten()
    vocab = adapter.unembed().weight.shape[0]
    step = max(1, LOGITS_PER_CHUNK // vocab)
    parts = []
    for start in range(0, len(flat_t), step):
        logits = adapter.logits(flat_h[start:start + step])
        tok = flat_t[start:start + step]
        logp = logits.log_softmax(-1).gather(-1, tok.clamp_min(0)[:, None])[:, 0]
        parts.append(torch.where(tok >= 0, logp, torch.zeros_like(logp)))
    return torch.cat(parts).view(targets.shape).sum(1)


def metric(adapter: Adapter, batch: Batch, hidden: torch.Tensor) -> torch.Tensor:
    """Per-prompt metric, float32 (len(batch),).

    One-token batch: logit(answer) - logit(distractor) at the read position (only those two rows of
    the unembedding are read). Multi-token batch: the answer continuation's summed teacher-forced
    log-probability minus the distractor's (the two branches' rows, ``continuation_logprobs``).
    ``hidden``: the final hidden states (the LM head's input), (rows, seq, d_model).
    """
    if batch.targets is not None:
        return _signed_sum(batch, continuation_logprobs(adapter, batch, hidden))
    vocab = torch.stack([batch.answer_ids, batch.distractor_ids], dim=-1).to(hidden.device)
    logits = adapter.logits(_at_read(batch, hidden), vocab=vocab)
    return logits[..., 0] - logits[..., 1]


def _signed_sum(batch: Batch, logprobs: torch.Tensor) -> torch.Tensor:
    """Per prompt, the answer branch's summed log-probability minus the distractor branch's."""
    return (logprobs * batch.branch_signs().to(logprobs.device)).view(batch.branches, -1).sum(0)


def metric_and_answer_probability(adapter: Adapter, batch: Batch,
                                  hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean pass's two read-outs, float32 (len(batch),) each: ``metric``, and the probability of the
    answer (over the whole vocabulary at the read position, or of the whole answer continuation: the
    product of its teacher-forced probabilities). A multi-token batch's log-softmax is formed once for both."""
    if batch.targets is not None:
        logprobs = continuation_logprobs(adapter, batch, hidden)
        return _signed_sum(batch, logprobs), logprobs[:len(batch)].exp()
    logits = adapter.logits(_at_read(batch, hidden))
    prob = logits.softmax(-1).gather(-1, batch.answer_ids.to(logits.device)[:, None])[:, 0]
    return metric(adapter, batch, hidden), prob


@torch.no_grad()
def read_metric(adapter: Adapter, batch: Batch, patches: Sequence[Patch] = ()) -> torch.Tensor:
    """Per-row metric of one hooked forward pass under ``patches``, float32 (rows,).

    The last block's MLP runs at the read positions only (``last_mlp_at``: nothing else reaches
    the metric). Callers that compare it with other passes run it inside ``fast_kernels``.
    """
    with last_mlp_at(adapter, read_positions(batch)), hooked(adapter, patches):
        hidden = adapter.final_hidden(batch.input_ids, batch.attention_mask)
    return metric(adapter, batch, hidden)
