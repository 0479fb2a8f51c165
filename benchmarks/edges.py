"""Benchmark edge scoring on a GPT-2-small-shaped model (12 layers x 12 heads, IOI prompts).

    python benchmarks/edges.py            # 64 IOI prompts
    python benchmarks/edges.py --quick    # 16 prompts
    python benchmarks/edges.py --device cuda

Measured in one run, on the same prompts and the same mean ablation (wall time; the EAP
ratios also in CPU seconds of this process, which other jobs on a shared machine disturb far
less; run with OMP_NUM_THREADS=1 for those to mean one core):
  fwd+bwd   one plain forward and backward pass of the logit difference over all prompts
            (median of 3): the unit of the EAP-IG budget, (IG steps + 2) of them;
  eap       circuitdiff's EAP for every edge (one split forward + backward, then the scores);
  eap-ig    the same with --ig-steps steps;
  exact     exact patching of the top --top edges by EAP-IG score, batched, from the cached prefix;
            its arithmetic limit is one no-grad forward over all prompts, timed at the same
            large batch (8 stacked copies, per copy; median of 3), times the sum over the edges
            of the fraction of blocks each must run (from its receiver's layer on), i.e. what
            the same rows cost in a plain batched forward pass.
The last line gives the ratios (EAP-IG in units of fwd+bwd; exact against its limit).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from common import model_dirs  # also puts src/ on sys.path

import numpy as np
import torch
from scipy.stats import spearmanr

from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.eap import eap_scores
from circuitdiff.interventions.edges import all_edges, exact_edge_metrics
from circuitdiff.interventions.readout import metric, read_metric
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.exact import record_activations
from circuitdiff.models.loading import load_model
from circuitdiff.pipeline import batches
from circuitdiff.tasks import encode_task, get_task


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def timed_both(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall s, CPU s of this process, result): on a shared machine the CPU seconds of a
    one-thread run barely move with other jobs, while wall time can double."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def median_time(fn: Callable[[], object], repeats: int = 3) -> float:
    return statistics.median(timed(fn)[0] for _ in range(repeats))


def median_both(fn: Callable[[], object], repeats: int = 3) -> tuple[float, float]:
    runs = [timed_both(fn)[:2] for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def forward_backward(adapter, batch) -> None:  # noqa: ANN001
    embed = adapter.model.get_input_embeddings()
    handle = embed.register_forward_hook(lambda _m, _a, out: out.requires_grad_(True))
    try:
        with torch.enable_grad(), fast_kernels(adapter):
            diff = metric(adapter, batch, adapter.final_hidden(batch.input_ids, batch.attention_mask))
            diff.sum().backward()
    finally:
        handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 prompts instead of 64")
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=200, help="edges patched exactly")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    n = 16 if args.quick else 64
    teacher_dir, _ = model_dirs()
    lm = load_model(str(teacher_dir), device=args.device)
    adapter = lm.adapter
    task = get_task("ioi", n_prompts=n, seed=0)
    base, corrupted = batches(encode_task(task, lm.tokenizer), lm.device)
    cache = record_activations(adapter, base)
    replacement = Replacement(Ablation.MEAN, record_activations(adapter, corrupted), n_base=n)
    edges = all_edges(adapter)
    print(f"model: {adapter.n_layers} layers x {adapter.n_heads} heads, d_model {adapter.d_model}; {n} prompts; "
          f"{len(edges)} edges")

    eap_scores(adapter, base.select(torch.arange(2)), cache, replacement, edges)  # warm-up (allocator, kernels)
    t_fb, c_fb = median_both(lambda: forward_backward(adapter, base))
    with fast_kernels(adapter):
        t_fwd = median_time(lambda: read_metric(adapter, base.repeat(8))) / 8
    t_eap, c_eap, eap = timed_both(lambda: eap_scores(adapter, base, cache, replacement, edges))
    t_ig, c_ig, ig = timed_both(lambda: eap_scores(adapter, base, cache, replacement, edges, ig_steps=args.ig_steps))
    print(f"fwd+bwd {t_fb:.2f}s  forward (per copy of 8) {t_fwd:.2f}s  eap {t_eap:.2f}s  eap-ig({args.ig_steps}) {t_ig:.2f}s")
    print(f"CPU s: fwd+bwd {c_fb:.2f}  eap {c_eap:.2f}  eap-ig({args.ig_steps}) {c_ig:.2f}; "
          f"ratios eap-ig/fwd+bwd {c_ig / c_fb:.2f}, eap/fwd+bwd {c_eap / c_fb:.2f}")

    top = np.argsort(-np.abs(ig.mean(1).numpy()), kind="stable")[: args.top].tolist()
    chosen = [edges[i] for i in top]
    with fast_kernels(adapter):
        clean = read_metric(adapter, base)
    t_exact, patched = timed(lambda: exact_edge_metrics(adapter, base, cache, replacement, chosen))
    exact = (patched - clean).mean(1).numpy()
    blocks = sum((adapter.n_layers - e.receiver_layer(adapter.n_layers)) / adapter.n_layers for e in chosen)
    limit = t_fwd * blocks
    rho_ig = spearmanr(exact, ig.mean(1).numpy()[top]).statistic
    rho_eap = spearmanr(exact, eap.mean(1).numpy()[top]).statistic
    print(f"exact top {len(chosen)}: {t_exact:.2f}s, arithmetic limit {limit:.2f}s; "
          f"Spearman vs exact on these edges: eap {rho_eap:.3f}, eap-ig {rho_ig:.3f}")
    print(f"RATIOS eap-ig/fwd+bwd {t_ig / t_fb:.2f} (budget {args.ig_steps + 2}); eap/fwd+bwd {t_eap / t_fb:.2f}; "
          f"exact/limit {t_exact / limit:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
