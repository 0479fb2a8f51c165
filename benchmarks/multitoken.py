"""Benchmark multi-token answers: exact-sweep cost per token of a multi-token task against a one-token one.

    python benchmarks/multitoken.py            # 6-layer GPT-2-small-wide student, 32 IOI prompts
    python benchmarks/multitoken.py --quick    # the shipped tiny-gpt2, 16 prompts (seconds)

The same IOI prompts run twice, measured side by side in one run (alternating, median of --repeats):
  one-token    the built-in answers (" Mary" vs " John"): one row per prompt, the logit difference;
  multi-token  each answer and distractor followed by the same two extra words (" Mary went home" vs
               " John went home"): two rows per prompt (answer and distractor branch), teacher-forced,
               three scored positions each.
A sweep's work grows with the tokens its rows hold (the blocks it runs, trimmed to the positions the
metric reads), so the fair unit is seconds per component per row token: the one-token rows hold the
prompt, the multi-token rows the prompt and two continuation tokens, twice. The last line gives the
ratio of those per-token costs (1.0 = a multi-token task costs what its extra tokens cost, nothing more).
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import model_dirs  # also puts src/ on sys.path

import torch

from circuitdiff.interventions.ablation import Ablation
from circuitdiff.interventions.exact import exact_sweep
from circuitdiff.interventions.prefix import needed_width
from circuitdiff.models.loading import load_model
from circuitdiff.pipeline import batches, clean_pass, task_replacement
from circuitdiff.tasks import Task, TaskPrompt, encode_task, get_task

EXTRA = " went home"


def extended(task: Task) -> Task:
    """The same prompts with every answer and distractor continued by the same words."""
    return Task(task.name + "-multi", tuple(TaskPrompt(p.prompt, p.answer + EXTRA, p.distractor + EXTRA,
                                                       template=p.template) for p in task.prompts))


def setup(lm, task: Task):  # noqa: ANN001, ANN201
    enc = encode_task(task, lm.tokenizer)
    batch, _ = batches(enc, lm.device)
    clean = clean_pass(lm, batch)
    replacement = task_replacement(Ablation.MEAN, clean.cache, enc, int(batch.input_ids.shape[0]), 0, False)
    width = needed_width(lm.adapter, batch)  # per prompt: the positions its widest row needs
    tokens = int(width.sum()) * batch.branches
    return enc, batch, replacement, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = "tiny-gpt2" if args.quick else str(model_dirs()[1])
    n = args.prompts or (16 if args.quick else 32)
    lm = load_model(model)
    one_task = get_task("ioi", n_prompts=n, seed=0)
    runs = {"one-token": setup(lm, one_task), "multi-token": setup(lm, extended(one_task))}
    assert runs["one-token"][0].branches == 1 and runs["multi-token"][0].branches == 2
    components = lm.adapter.components()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, (_, batch, replacement, _) in runs.items():
            t0 = time.perf_counter()
            exact_sweep(lm.adapter, batch, replacement, components)
            times[name].append(time.perf_counter() - t0)
    per_token = {}
    for name, (enc, batch, _, tokens) in runs.items():
        t = statistics.median(times[name])
        per_token[name] = t / len(components) / tokens
        print(f"{name:12s} {len(batch)} prompts, {batch.input_ids.shape[0]} rows, {tokens} row tokens: "
              f"{t:.2f} s for {len(components)} components = {1e6 * per_token[name]:.2f} us per component-token")
    ratio = per_token["multi-token"] / per_token["one-token"]
    total = statistics.median(times["multi-token"]) / statistics.median(times["one-token"])
    print(f"{model}: multi-token/one-token cost per row token {ratio:.2f}x (whole sweep {total:.2f}x, "
          f"for {runs['multi-token'][3] / runs['one-token'][3]:.2f}x the row tokens)")


if __name__ == "__main__":
    main()
