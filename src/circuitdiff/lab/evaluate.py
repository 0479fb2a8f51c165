"""Task accuracy and mean metric, measured the way circuitdiff measures them.

The metric is circuitdiff's (``interventions.readout``): the answer-minus-distractor logit at the
read position (last prompt token, or the mask) for one-token answers, the difference of the
teacher-forced summed log-probabilities of answer and distractor when either takes several
tokens. Accuracy is the share of prompts where it is positive. Used for the model cards and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from circuitdiff.errors import TaskEncodingError
from circuitdiff.pipeline import batches
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.readout import read_metric
from circuitdiff.lab.recipe import ALL_TASKS, Kind
from circuitdiff.models.adapters import adapter_for
from circuitdiff.tasks import EncodedTask, encode_task, get_task
from circuitdiff.tasks.encode import drop_multi_token_items


def logit_diffs(model: Any, tokenizer: Any, task_name: str, n_prompts: int, seed: int, masked: bool,
                batch_size: int = 128) -> torch.Tensor:
    """The task metric per prompt (float32, shape (n_prompts,)): the answer-minus-distractor logit,
    or log-probability difference for multi-token answers, read the way every circuitdiff metric is
    (``interventions.readout``). A masked LM scores one mask position, so there ``facts`` drops the
    items this tokenizer cannot answer in one token (fewer rows)."""
    return _task_metric(model, tokenizer, task_name, n_prompts, seed, masked, batch_size)[0]


@torch.no_grad()
def _task_metric(model: Any, tokenizer: Any, task_name: str, n_prompts: int, seed: int, masked: bool,
                 batch_size: int = 128) -> tuple[torch.Tensor, EncodedTask]:
    """``logit_diffs`` and the encoding it read (which tells whether any answer took several tokens)."""
    task = get_task(task_name, n_prompts, seed, masked)
    if masked:
        (task,), _ = drop_multi_token_items([task], [tokenizer])
    enc = encode_task(task, tokenizer)
    context = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if context is not None and enc.input_ids.shape[1] > context:
        raise TaskEncodingError(f"task '{task_name}' prompts are longer than the model context ({context} tokens)")
    was_training = model.training
    model.eval()
    adapter = adapter_for(model)
    batch = batches(enc, torch.device("cpu"))[0]  # both branches of a multi-token task
    out = []
    with fast_kernels(adapter):
        for start in range(0, enc.n, batch_size):
            rows = torch.arange(start, min(start + batch_size, enc.n))
            out.append(read_metric(adapter, batch.select(rows).to(next(model.parameters()).device)).cpu())
    model.train(was_training)
    return torch.cat(out), enc


def brief(error: str) -> str:
    """The gist of a task-encoding error, for a table cell: "task 'x': reason: details" -> "reason"."""
    reason = error.split(": ", 1)[1] if error.startswith("task '") and ": " in error else error
    return reason.split(": ", 1)[0]


def evaluate_tasks(model: Any, tokenizer: Any, kind: Kind, tasks: Sequence[str] = ALL_TASKS,
                   n_prompts: int = 256, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per task: accuracy, mean metric (``mean_logit_diff``: the log-probability difference where
    ``multi_token`` is set, some answer or distractor taking several tokens) and prompt count (or the
    encoding error); for a task that drops multi-token items, the count kept and how many were ``dropped``."""
    results: dict[str, dict[str, Any]] = {}
    for name in tasks:
        try:
            ld, enc = _task_metric(model, tokenizer, name, n_prompts, seed, kind == "masked")
        except TaskEncodingError as exc:
            results[name] = {"error": str(exc)}
            continue
        results[name] = {
            "accuracy": round(float((ld > 0).float().mean()), 4),
            "mean_logit_diff": round(float(ld.mean()), 3),
            "n_prompts": int(ld.numel()),
        }
        if enc.branches > 1:  # the metric is the teacher-forced log-probability difference
            results[name]["multi_token"] = True
        if ld.numel() < n_prompts:  # facts: items whose answer this tokenizer splits were dropped
            results[name]["dropped"] = n_prompts - int(ld.numel())
    return results
