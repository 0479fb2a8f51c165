"""Task accuracy and mean logit difference, measured the way circuitdiff measures them.

Accuracy is the share of prompts whose answer logit beats the distractor logit at the
read position (last prompt token, or the mask). Used for the model cards and the tests.
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
from circuitdiff.tasks import encode_task, get_task
from circuitdiff.tasks.encode import drop_multi_token_items


@torch.no_grad()
def logit_diffs(model: Any, tokenizer: Any, task_name: str, n_prompts: int, seed: int, masked: bool,
                batch_size: int = 128) -> torch.Tensor:
    """Answer-minus-distractor logit per prompt (float32, shape (n_prompts,), fewer for a task
    such as ``facts`` that drops the items this tokenizer cannot answer in one token), read the
    way every circuitdiff metric is (``interventions.readout``)."""
    (task,), _ = drop_multi_token_items([get_task(task_name, n_prompts, seed, masked)], [tokenizer])
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
    return torch.cat(out)


def brief(error: str) -> str:
    """The gist of a task-encoding error, for a table cell: "task 'x': reason: details" -> "reason"."""
    reason = error.split(": ", 1)[1] if error.startswith("task '") and ": " in error else error
    return reason.split(": ", 1)[0]


def evaluate_tasks(model: Any, tokenizer: Any, kind: Kind, tasks: Sequence[str] = ALL_TASKS,
                   n_prompts: int = 256, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per task: accuracy, mean logit difference and prompt count (or the encoding error);
    for a task that drops multi-token items, the count kept and how many were ``dropped``."""
    results: dict[str, dict[str, Any]] = {}
    for name in tasks:
        try:
            ld = logit_diffs(model, tokenizer, name, n_prompts, seed, kind == "masked")
        except TaskEncodingError as exc:
            results[name] = {"error": str(exc)}
            continue
        results[name] = {
            "accuracy": round(float((ld > 0).float().mean()), 4),
            "mean_logit_diff": round(float(ld.mean()), 3),
            "n_prompts": int(ld.numel()),
        }
        if ld.numel() < n_prompts:  # facts: items whose answer this tokenizer splits were dropped
            results[name]["dropped"] = n_prompts - int(ld.numel())
    return results
