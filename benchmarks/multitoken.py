"""Benchmark multi-token answers: exact-sweep and edge cost per token of a multi-token task against a one-token one.

    python benchmarks/multitoken.py            # 6-layer GPT-2-small-wide student, 32 IOI prompts
    python benchmarks/multitoken.py --quick    # the shipped tiny-gpt2, 16 prompts (seconds)
    python benchmarks/multitoken.py --no-edges # the sweep alone

The same IOI prompts run twice, measured side by side in one run (alternating, median of --repeats):
  one-token    the built-in answers (" Mary" vs " John"): one row per prompt, the logit difference;
  multi-token  each answer and distractor followed by the same two extra words (" Mary went home" vs
               " John went home"): two rows per prompt (answer and distractor branch), teacher-forced,
               three scored positions each.
A sweep's work grows with the tokens its rows hold (the blocks it runs, trimmed to the positions the
metric reads), so the fair unit is seconds per component per row token: the one-token rows hold the
prompt, the multi-token rows the prompt and two continuation tokens, twice. The last line gives the
ratio of those per-token costs (1.0 = a multi-token task costs what its extra tokens cost, nothing more).

Each sweep is also set against its arithmetic limit, as benchmarks/sweep.py does it (its functions,
imported): the matmul FLOPs of the passes the sweep plans, counted by torch's FlopCounterMode on the
real rows (both branches of a multi-token prompt, continuation tokens included, the last block's MLP at
every scored position), divided by the float32 matmul throughput measured by probes interleaved with
the sweep (their time taken out of it). "x limit" is the sweep's time over that limit (1.0 = no overhead
beyond the matmuls).

Edges (unless --no-edges), on the same prompts, mean ablation: EAP-IG (--ig-steps) over every edge, and
exact patching of the --top edges by the one-token task's EAP-IG score (the same edges for both tasks),
each in seconds per row token, multi-token against one-token.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import model_dirs  # also puts src/ on sys.path
from sweep import Interleaver, exact_flops, gemm_rate

import numpy as np
import torch

from circuitdiff.interventions.ablation import Ablation
from circuitdiff.interventions.eap import eap_scores
from circuitdiff.interventions.edges import all_edges, exact_edge_metrics
from circuitdiff.interventions.exact import exact_sweep, record_activations
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


PROBES = 6
"""Matrix-multiply throughput probes interleaved with each timed sweep."""


def timed_sweep(lm, batch, replacement, components, rates: list[float]) -> float:  # noqa: ANN001
    """Seconds of one exact sweep, throughput probes run inside it (appended to ``rates``) taken out."""
    d = lm.adapter.d_model
    probes = Interleaver(len(components), [lambda: rates.append(gemm_rate(d, 4 * d)) for _ in range(PROBES)])
    t0 = time.perf_counter()
    exact_sweep(lm.adapter, batch, replacement, components, progress=probes)
    seconds = time.perf_counter() - t0 - probes.excluded
    probes.finish()
    return seconds


def bench_edges(lm, runs: dict, ig_steps: int, top: int) -> None:  # noqa: ANN001
    """EAP-IG over every edge and exact patching of the top edges, per row token, both tasks side by side."""
    adapter = lm.adapter
    edges = all_edges(adapter)
    caches = {name: record_activations(adapter, batch) for name, (_, batch, _, _) in runs.items()}
    times: dict[str, dict[str, float]] = {}
    chosen = None
    for name, (_, batch, replacement, _) in runs.items():  # one-token first: its EAP-IG picks the edges
        eap_scores(adapter, batch.select(torch.arange(2)), caches[name], replacement, edges)  # warm-up
        t0 = time.perf_counter()
        ig = eap_scores(adapter, batch, caches[name], replacement, edges, ig_steps=ig_steps)
        t_ig = time.perf_counter() - t0
        if chosen is None:
            order = np.argsort(-np.abs(ig.mean(1).numpy()), kind="stable")[:top]
            chosen = [edges[i] for i in order.tolist()]
        t0 = time.perf_counter()
        exact_edge_metrics(adapter, batch, caches[name], replacement, chosen)
        times[name] = {"eap-ig": t_ig, "exact": time.perf_counter() - t0}
    print(f"edges: {len(edges)} in the graph; EAP-IG ({ig_steps} steps) over all of them, exact over the top {top}")
    for name, (_, batch, _, tokens) in runs.items():
        t = times[name]
        print(f"{name:12s} {tokens} row tokens: eap-ig {t['eap-ig']:.2f} s ({1e3 * t['eap-ig'] / tokens:.2f} ms per "
              f"row token), exact {t['exact']:.2f} s ({1e3 * t['exact'] / tokens:.2f} ms per row token)")
    scale = runs["one-token"][3] / runs["multi-token"][3]
    print("edges multi-token/one-token cost per row token: "
          + ", ".join(f"{k} {scale * times['multi-token'][k] / times['one-token'][k]:.2f}x" for k in ("eap-ig", "exact"))
          + " (whole runs: " + ", ".join(f"{k} {times['multi-token'][k] / times['one-token'][k]:.2f}x"
                                        for k in ("eap-ig", "exact")) + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-edges", action="store_true")
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=100, help="edges patched exactly")
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
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, (_, batch, replacement, _) in runs.items():
            times[name].append(timed_sweep(lm, batch, replacement, components, rates[name]))
    per_token, of_limit = {}, {}
    for name, (enc, batch, _, tokens) in runs.items():
        t = statistics.median(times[name])
        per_token[name] = t / len(components) / tokens
        limit = exact_flops(lm, batch, components) / statistics.mean(rates[name])
        of_limit[name] = t / limit
        print(f"{name:12s} {len(batch)} prompts, {batch.input_ids.shape[0]} rows, {tokens} row tokens: "
              f"{t:.2f} s for {len(components)} components = {1e6 * per_token[name]:.2f} us per component-token; "
              f"arithmetic limit {limit:.2f} s at {statistics.mean(rates[name]) / 1e9:.1f} GFLOP/s "
              f"(probes {min(rates[name]) / 1e9:.1f}-{max(rates[name]) / 1e9:.1f}): {of_limit[name]:.2f}x limit")
    ratio = per_token["multi-token"] / per_token["one-token"]
    total = statistics.median(times["multi-token"]) / statistics.median(times["one-token"])
    print(f"{model}: multi-token/one-token cost per row token {ratio:.2f}x (whole sweep {total:.2f}x, "
          f"for {runs['multi-token'][3] / runs['one-token'][3]:.2f}x the row tokens); exact sweep against its "
          f"arithmetic limit: multi-token {of_limit['multi-token']:.2f}x, one-token {of_limit['one-token']:.2f}x")
    if not args.no_edges:
        bench_edges(lm, runs, args.ig_steps, args.top)


if __name__ == "__main__":
    main()
