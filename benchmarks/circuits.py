"""Benchmark node circuit discovery: all thresholds together vs one exact node sweep vs the old pruning.

    python benchmarks/circuits.py                       # the shipped pair (tiny-gpt2 / tiny-distilgpt2), ioi + numerals
    python benchmarks/circuits.py --gpt2-small          # GPT-2-small-shaped random teacher, 8 IOI prompts (~5 min on 2 cores)

Measured side by side in one run, per model and task, on the same prompts and ablation:
  sweep    circuitdiff's exact node sweep (every component ablated alone), the unit of the goal;
  prune    the new shared pruning for all thresholds at once (``circuits.pruning.prune_thresholds``);
  discover the whole new discovery: pruning plus the metric curve, faithfulness under the other
           ablation and Wang et al. completeness for every circuit;
  old      circuitdiff 0.1.0's pruning, copied below unchanged in substance: one forward pass from the
           embeddings per candidate (speculatively stacked), every threshold from scratch.
Each is timed ``--repeat`` times in rotation and the fastest run is kept (the machine is shared).
Block-tokens (blocks run x rows x positions) count the arithmetic independently of the load.
The old and new circuits must be identical (same definition): the script says so or stops.
A random model's clean logit difference is near 0, so for ``--gpt2-small`` each prompt's answer and
distractor are the clean model's top and bottom tokens (a clearly positive metric to prune against).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from common import model_dirs  # also puts src/ on sys.path

import torch

from circuitdiff.analysis.circuits import SWEEP_THRESHOLDS
from circuitdiff.circuits import discover, other_ablation
from circuitdiff.circuits.buckets import BucketedEvaluator, Evaluator, circuit_evaluator
from circuitdiff.circuits.evaluation import CircuitEvaluator
from circuitdiff.circuits.pruning import prune_thresholds
from circuitdiff.circuits.scoring import pruning_order
from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.readout import read_metric
from circuitdiff.interventions.hooks import Patch
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.exact import exact_sweep, plan_sweep, record_activations, rows_per_forward
from circuitdiff.models.components import Component
from circuitdiff.models.loading import LoadedModel, load_model
from circuitdiff.pipeline import batches
from circuitdiff.tasks import encode_task, get_task


# --- circuitdiff 0.1.0's pruning (analysis/circuits.py before this change) ------------------------
class OldAblatedMetric:
    """Mean metric with sets ablated; full-width forward from the embeddings for every set."""

    def __init__(self, lm: LoadedModel, base: Batch, replacement: Replacement) -> None:
        self.adapter, self.base, self.replacement = lm.adapter, base, replacement
        self.rows_per_pass = rows_per_forward(lm.adapter, base.input_ids.shape[1])
        self.prompts = torch.arange(len(base))
        self.evaluations = 0

    def many(self, sets: Sequence[Sequence[Component]]) -> list[float]:
        n = len(self.base)
        per_pass = max(1, self.rows_per_pass // n)
        out: list[float] = []
        for first in range(0, len(sets), per_pass):
            chunk = sets[first : first + per_pass]
            members: dict[Component, list[int]] = {}
            for v, comps in enumerate(chunk):
                for c in comps:
                    members.setdefault(c, []).append(v)
            patches = []
            for c, variants in members.items():
                rows = (torch.tensor(variants)[:, None] * n + self.prompts[None, :]).flatten()
                value = self.replacement.values(c, self.prompts)
                patches.append(Patch(c, rows, None if value is None else value.repeat(len(variants), 1, 1)))
            diff = read_metric(self.adapter, self.base.repeat(len(chunk)), patches)
            out.extend(diff.view(len(chunk), n).mean(1).tolist())
            self.evaluations += len(chunk)
        return out


def old_prune(metric: OldAblatedMetric, components: list[Component], effects: Sequence[float], clean: float,
              threshold: float) -> list[Component]:
    order = [components[i] for i in sorted(range(len(components)), key=lambda i: abs(effects[i]))]
    limit, pruned, pos = threshold * abs(clean), [], 0
    max_lookahead = max(1, metric.rows_per_pass // len(metric.base))
    lookahead = min(4, max_lookahead)
    while pos < len(order):
        candidates = order[pos : pos + lookahead]
        values = metric.many([pruned + candidates[: j + 1] for j in range(len(candidates))])
        all_passed = True
        for candidate, value in zip(candidates, values):
            pos += 1
            if abs(value - clean) >= limit:
                all_passed = False
                break
            pruned.append(candidate)
        lookahead = min(2 * lookahead, max_lookahead) if all_passed else max(1, lookahead // 2)
    return [c for c in components if c not in set(pruned)]


# --- the benchmark --------------------------------------------------------------------------------
def sweep_block_tokens(lm: LoadedModel, base: Batch, components: list[Component]) -> int:
    """Blocks x rows x positions the exact sweep runs, from its own plan."""
    total = 0
    for chunk in plan_sweep(lm.adapter, base, components):
        m, layers = len(chunk.prompts), [layer for layer, _ in chunk.groups]
        total += chunk.width * m * max(layers)
        total += chunk.width * sum(len(idx) * m * (lm.adapter.n_layers - layer) for layer, idx in chunk.groups)
    return total


def rotate(jobs: dict[str, Callable[[], object]], repeat: int) -> tuple[dict[str, float], dict[str, object]]:
    best: dict[str, float] = {}
    results: dict[str, object] = {}
    for _ in range(repeat):
        for name, job in jobs.items():
            t0 = time.perf_counter()
            results[name] = job()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    return best, results


def bench(lm: LoadedModel, label: str, task_name: str, args: argparse.Namespace, extreme_answers: bool) -> dict[str, float]:
    task = get_task(task_name, n_prompts=args.n_prompts, seed=args.seed, masked=lm.adapter.masked_lm)
    base, corrupted = batches(encode_task(task, lm.tokenizer), lm.device)
    if extreme_answers:
        with torch.no_grad():
            h = lm.adapter.final_hidden(base.input_ids, base.attention_mask)[torch.arange(len(base)), base.read_pos]
            order = lm.adapter.logits(h).argsort(-1)
        base = Batch(base.input_ids, base.attention_mask, base.read_pos, order[:, -1], order[:, 0])
    reference = record_activations(lm.adapter, corrupted if corrupted is not None else base)
    ablation = Ablation(args.ablation)
    replacement = Replacement(ablation, reference, n_base=len(base), seed=args.seed)
    cross = other_ablation(ablation)
    other = Replacement(cross, reference, n_base=len(base), seed=args.seed) if cross else None
    comps = lm.adapter.components()
    with fast_kernels(lm.adapter):  # the unablated metric, under the kernels of the sweep
        clean = float(read_metric(lm.adapter, base).double().mean())
    effects = (exact_sweep(lm.adapter, base, replacement, comps) - clean).mean(1).tolist()
    thresholds = SWEEP_THRESHOLDS
    evaluators: list[Evaluator] = []
    single: list[CircuitEvaluator] = []

    def new_prune() -> dict[float, list[Component]]:
        with fast_kernels(lm.adapter):
            evaluators.append(circuit_evaluator(lm.adapter, base, replacement))
            return prune_thresholds(evaluators[-1], pruning_order(comps, effects), clean, thresholds)

    def one_bucket() -> dict[float, list[Component]]:
        with fast_kernels(lm.adapter):
            single.append(CircuitEvaluator(lm.adapter, base, replacement))
            return prune_thresholds(single[-1], pruning_order(comps, effects), clean, thresholds)

    def old() -> dict[float, list[Component]]:
        metric = OldAblatedMetric(lm, base, replacement)
        with fast_kernels(lm.adapter):
            found = {t: old_prune(metric, comps, effects, clean, t) for t in thresholds}
        old.evaluations = metric.evaluations  # type: ignore[attr-defined]
        return found

    jobs = {"sweep": lambda: exact_sweep(lm.adapter, base, replacement, comps),
            "prune": new_prune,
            "discover": lambda: discover(lm.adapter, base, replacement, effects, clean, thresholds, other=other,
                                         seed=args.seed)}
    if isinstance(circuit_evaluator(lm.adapter, base, replacement), BucketedEvaluator):
        jobs["one bucket"] = one_bucket
    if not args.skip_old:
        jobs["old"] = old
    times, results = rotate(jobs, args.repeat)
    new = results["prune"]
    if "one bucket" in results and results["one bucket"] != new:
        raise SystemExit(f"{label}/{task_name}: width buckets changed the circuits")
    if "old" in results and results["old"] != new:
        raise SystemExit(f"{label}/{task_name}: old and new circuits differ: "
                         f"{ {t: len(c) for t, c in results['old'].items()} } vs { {t: len(c) for t, c in new.items()} }")
    ev = evaluators[-1]
    sweep_tokens = sweep_block_tokens(lm, base, comps)
    print(f"\n{label} / {task_name}: {len(comps)} components, {len(base)} prompts, clean {clean:.3f}, "
          f"circuit sizes {', '.join(f'T={t}: {len(new[t])}' for t in thresholds)}"
          + ("; old circuits identical" if "old" in results else ""))
    print(f"  sweep     {times['sweep']:8.2f} s   block-tokens {sweep_tokens:>12,}")
    buckets = len(ev.parts) if isinstance(ev, BucketedEvaluator) else 1
    print(f"  prune     {times['prune']:8.2f} s   block-tokens {ev.block_tokens:>12,}   "
          f"({times['prune'] / times['sweep']:.2f}x the sweep; {ev.passes} passes; {buckets} width bucket(s))")
    if single:
        print(f"  one bucket {times['one bucket']:7.2f} s   block-tokens {single[-1].block_tokens:>12,}   "
              f"(all prompts padded to the widest; width buckets {times['one bucket'] / times['prune']:.2f}x faster, "
              "circuits identical)")
    print(f"  discover  {times['discover']:8.2f} s   ({times['discover'] / times['sweep']:.2f}x the sweep: pruning + curve + "
          f"other ablation + completeness)")
    if "old" in times:
        old_tokens = old.evaluations * len(base) * lm.adapter.n_layers * base.input_ids.shape[1]  # type: ignore[attr-defined]
        print(f"  old       {times['old']:8.2f} s   block-tokens {old_tokens:>12,}   ({times['old'] / times['sweep']:.2f}x "
              f"the sweep; new pruning {times['old'] / times['prune']:.1f}x faster)")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpt2-small", action="store_true", help="GPT-2-small-shaped random teacher instead of the shipped pair")
    parser.add_argument("--n-prompts", type=int, default=None, help="default: 64 (shipped pair), 8 (--gpt2-small)")
    parser.add_argument("--ablation", default="mean", choices=["mean", "zero", "resample"])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-old", action="store_true", help="leave out the old pruning (slow on big models)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.gpt2_small:
        args.n_prompts = args.n_prompts or 8
        teacher, _ = model_dirs(args.seed)
        models, tasks, extreme = [("gpt2-small-shaped", str(teacher))], ["ioi"], True
    else:
        args.n_prompts = args.n_prompts or 64
        models, tasks, extreme = [("tiny-gpt2", "tiny-gpt2"), ("tiny-distilgpt2", "tiny-distilgpt2")], ["ioi", "numerals"], False
    totals: dict[str, float] = {}
    for label, source in models:
        lm = load_model(source)
        for task in tasks:
            for name, seconds in bench(lm, label, task, args, extreme).items():
                totals[name] = totals.get(name, 0.0) + seconds
    line = f"all: prune {totals['prune'] / totals['sweep']:.2f}x the sweep, discover {totals['discover'] / totals['sweep']:.2f}x"
    if "old" in totals:
        line += f", old {totals['old'] / totals['sweep']:.2f}x; new pruning {totals['old'] / totals['prune']:.1f}x faster than old"
    print("\n" + line)


if __name__ == "__main__":
    main()
