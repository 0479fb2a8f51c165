"""Benchmark the component sweep: one forward per component vs circuitdiff exact vs attribution.

    python benchmarks/sweep.py            # 64 IOI prompts, GPT-2-small-shaped teacher + 6-layer student
    python benchmarks/sweep.py --quick    # 16 prompts (a few minutes on 2 cores)

Measured side by side in one run, on the same prompts and the same mean ablation:
  loop         one full forward per component with full logits, as the peers do it; every
               forward costs the same, so by default it runs for an evenly spread sample of
               components and its time is (components + 1) x its mean forward (--full-loop: all);
  TL           TransformerLens's run_with_hooks, the same loop, where transformer_lens is installed;
  exact        circuitdiff.interventions.exact.exact_sweep over every component;
  attribution  circuitdiff's --method attribution (one forward and one backward), median of 3 runs.
The machine is shared, so the loop's forwards, TransformerLens's and short matrix-multiply
throughput probes run interleaved with the exact sweep (from its progress callback, their time
taken out of the sweep's): every method meets the same load, and ratios stay fair when the load
changes. The arithmetic limit is the exact sweep's matmul FLOP count (from its own plan, counted
with torch's FlopCounterMode) divided by the matmul throughput measured during the sweep; the
fraction against the best throughput seen in the run is printed as well. The last line gives the ratios.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common import model_dirs  # also puts src/ on sys.path

import torch
from scipy.stats import spearmanr
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig

from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.hooks import Patch, hooked
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.methods import Method, ablated_metrics
from circuitdiff.interventions.prefix import trim
from circuitdiff.interventions.readout import read_metric
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET, exact_sweep, plan_sweep, record_activations
from circuitdiff.models.components import Component
from circuitdiff.models.loading import LoadedModel, load_model
from circuitdiff.pipeline import batches
from circuitdiff.tasks import encode_task, get_task


def gemm_rate(d: int, d_mlp: int, rows: int = 4096) -> float:
    """FLOP/s of one float32 GEMM of each shape the sweep runs most (MLP in, MLP out, QKV)."""
    flops, seconds = 0.0, 0.0
    for k, n in ((d, d_mlp), (d_mlp, d), (d, 3 * d)):
        a, b = torch.randn(rows, k), torch.randn(k, n)
        torch.mm(a, b)  # warm
        t0 = time.perf_counter()
        torch.mm(a, b)
        seconds += time.perf_counter() - t0
        flops += 2.0 * rows * k * n
    return flops / seconds


class Interleaver:
    """A progress callback that runs side jobs at evenly spaced points of a long sweep.

    Their time is added to ``excluded``, to be taken out of the sweep's wall time.
    """

    def __init__(self, total: float, jobs: list[Callable[[], None]]) -> None:
        self.total, self.jobs = total, jobs
        self.done, self.next, self.excluded = 0.0, 0, 0.0

    def __call__(self, amount: float) -> None:
        self.done += amount
        while self.next < len(self.jobs) and self.done >= self.total * (self.next + 1) / (len(self.jobs) + 1) - 1e-9:
            self._run_next()

    def finish(self) -> None:
        while self.next < len(self.jobs):
            self._run_next()

    def _run_next(self) -> None:
        t0 = time.perf_counter()
        self.jobs[self.next]()
        self.excluded += time.perf_counter() - t0
        self.next += 1


def pass_flops(lm: LoadedModel, base: Batch, width: int) -> tuple[list[float], float]:
    """Matmul FLOPs of one metric pass for one prompt (its every row: both branches of a multi-token task)
    trimmed to ``width``, with the sweep's kernels: per block (the last block's MLP at the positions the
    metric reads only: the read position, and the continuation positions of a multi-token task, as in
    every sweep pass), and of the read-out after the blocks (two unembedding rows at the read position for a
    one-token task; the whole vocabulary at every continuation position for a multi-token one)."""
    one = trim(base.select(torch.tensor([0])), width)
    with torch.no_grad(), fast_kernels(lm.adapter), FlopCounterMode(display=False) as counter:
        read_metric(lm.adapter, one)
    counts = counter.get_flop_counts()
    root = type(lm.model.base_model).__name__
    blocks = []
    for i in range(lm.adapter.n_layers):
        name = f"{root}.{lm.adapter.layers_path.split('.', 1)[1]}.{i}"
        blocks.append(float(sum(counts.get(name, {}).values())))
    return blocks, float(sum(counts["Global"].values())) - sum(blocks)


def exact_flops(lm: LoadedModel, base: Batch, components: Sequence[Component],
                memory_budget: int = DEFAULT_MEMORY_BUDGET) -> float:
    """Matmul FLOPs of the exact sweep as planned (under ``memory_budget``, as ``exact_sweep`` plans it): clean
    prefix passes plus each group from its layer on, each variant's pass ending in the metric's read-out."""
    total, cache = 0.0, {}
    for chunk in plan_sweep(lm.adapter, base, components, memory_budget):
        per_block, readout = cache.setdefault(chunk.width, pass_flops(lm, base, chunk.width))
        m = len(chunk.prompts)
        layers = [layer for layer, _ in chunk.groups]
        total += m * sum(per_block[: max(layers)])  # prefix pass stops after the last block it must record
        total += sum(len(idx) * m * (sum(per_block[layer:]) + readout) for layer, idx in chunk.groups)
    return total


def loop_forward(lm: LoadedModel, base: Batch, patches: list[Patch]) -> torch.Tensor:
    """The peers' way: a full forward with full logits, then read the logit difference."""
    with torch.no_grad(), hooked(lm.adapter, patches):
        logits = lm.model(input_ids=base.input_ids, attention_mask=base.attention_mask).logits
    rows = torch.arange(len(base))
    at = logits[rows, base.read_pos]
    return (at[rows, base.answer_ids] - at[rows, base.distractor_ids]).float()


def loop_flops(lm: LoadedModel, base: Batch) -> float:
    with FlopCounterMode(display=False) as counter:
        loop_forward(lm, base, [])
    return float(counter.get_total_flops())


def transformer_lens_model(folder: str, lm: LoadedModel) -> object | None:
    """The model under TransformerLens 3+ (TransformerBridge, hooks on the HF modules), or None if absent."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except Exception:  # noqa: BLE001  (absent, or TransformerLens 2, which needs transformers 4)
        return None
    twin = load_model(folder).model  # the bridge rewraps the module tree: keep it off the model we time
    return TransformerBridge.boot_transformers(folder, hf_model=twin, tokenizer=lm.tokenizer, device="cpu")


def transformer_lens_forward(
    tl_model: object, base: Batch, replacement: Replacement, c: Component, times: list[float]
) -> torch.Tensor:
    """One component ablated with TransformerLens's run_with_hooks (full logits); appends its seconds."""
    rows = torch.arange(len(base))
    values = replacement.values(c, rows)
    name = f"blocks.{c.layer}.hook_mlp_out" if c.head is None else f"blocks.{c.layer}.attn.hook_z"

    def hook(act: torch.Tensor, hook: object) -> torch.Tensor:
        target = act if c.head is None else act[:, :, c.head]
        target[:] = 0 if values is None else values
        return act

    t0 = time.perf_counter()
    with torch.no_grad():
        logits = tl_model.run_with_hooks(base.input_ids, attention_mask=base.attention_mask,  # type: ignore[attr-defined]
                                         fwd_hooks=[(name, hook)])
    times.append(time.perf_counter() - t0)
    at = logits[rows, base.read_pos]
    return (at[rows, base.answer_ids] - at[rows, base.distractor_ids]).float()


@dataclass
class ModelResult:
    name: str
    n_components: int
    loop_s: float
    loop_sampled: int
    tl_s: float | None
    tl_max_diff: float | None
    exact_s: float
    attribution_s: float
    max_diff: float
    max_effect: float
    spearman: float
    spearman_abs: float
    exact_flops: float
    loop_flops: float
    rates: list[float]


def timed(fn: Callable[[], object], into: list[float]) -> object:
    t0 = time.perf_counter()
    result = fn()
    into.append(time.perf_counter() - t0)
    return result


def bench_model(folder: str, name: str, args: argparse.Namespace) -> ModelResult:
    """Time every method on one model, the loop, TransformerLens and GEMM probes interleaved with the exact sweep."""
    lm = load_model(folder)
    task = get_task(args.task, n_prompts=args.n_prompts, seed=args.seed, masked=lm.adapter.masked_lm)
    clean, corrupted = batches(encode_task(task, lm.tokenizer), lm.device)
    reference = record_activations(lm.adapter, corrupted if corrupted is not None else clean)
    replacement = Replacement(Ablation(args.ablation), reference, n_base=len(clean), seed=args.seed)
    comps = lm.adapter.components()
    C, rows = len(comps), torch.arange(len(clean))
    d, d_mlp = lm.adapter.d_model, 4 * lm.adapter.d_model
    print(f"{name}: {C} components, {len(clean)} prompts of width {clean.input_ids.shape[1]}", flush=True)

    n_sample = C if args.full_loop else min(C, args.loop_sample)
    pick = sorted({round(i * (C - 1) / max(1, n_sample - 1)) for i in range(n_sample)})
    tl_model = transformer_lens_model(folder, lm)
    attribution = lambda: ablated_metrics(lm.adapter, clean, replacement, comps, Method.ATTRIBUTION)  # noqa: E731
    exact_sweep(lm.adapter, clean, replacement, comps[-1:])  # warm-ups
    baseline = loop_forward(lm, clean, [])
    attr_times: list[float] = []
    attr = timed(attribution, attr_times)

    loop_times, tl_times, rates = [], [], [gemm_rate(d, d_mlp)]
    loop_out: dict[int, torch.Tensor] = {}
    tl_out: dict[int, torch.Tensor] = {}
    jobs: list[Callable[[], None]] = []
    for n, i in enumerate(pick):
        patch = [Patch(comps[i], rows, replacement.values(comps[i], rows))]
        jobs.append(lambda i=i, patch=patch: loop_out.__setitem__(i, timed(lambda: loop_forward(lm, clean, patch), loop_times)))
        if tl_model is not None:
            jobs.append(lambda i=i: tl_out.__setitem__(i, transformer_lens_forward(tl_model, clean, replacement, comps[i], tl_times)))
        jobs.append(lambda: rates.append(gemm_rate(d, d_mlp)))
        if n == len(pick) // 2:
            jobs.append(lambda: timed(attribution, attr_times))
    interleaved = Interleaver(C, jobs)
    t0 = time.perf_counter()
    exact = exact_sweep(lm.adapter, clean, replacement, comps, progress=interleaved)
    exact_s = time.perf_counter() - t0 - interleaved.excluded
    interleaved.finish()
    timed(attribution, attr_times)
    rates.append(gemm_rate(d, d_mlp))

    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    loop_s = (C + 1) * mean(loop_times)
    attr_s = sorted(attr_times)[len(attr_times) // 2]
    print(f"  exact        {exact_s:8.1f} s", flush=True)
    print(f"  attribution  {attr_s:8.2f} s  (median of {len(attr_times)})", flush=True)
    print(f"  loop         {loop_s:8.1f} s  ({len(pick)} forwards: mean {mean(loop_times):.2f} s, "
          f"fastest {min(loop_times):.2f} s)", flush=True)
    loop = torch.stack([loop_out[i] for i in pick])
    max_diff = float((exact[pick] - loop).abs().max())
    tl_s = max_diff_tl = None
    if tl_model is not None:
        tl_s = (C + 1) * mean(tl_times)
        max_diff_tl = float((torch.stack([tl_out[i] for i in pick]) - exact[pick]).abs().max())
        print(f"  TransformerLens {tl_s:5.1f} s  (mean forward {mean(tl_times):.2f} s; max |TL - exact| "
              f"{max_diff_tl:.1e})", flush=True)

    exact_effect = (exact - baseline[None, :]).mean(1).numpy()
    attr_effect = (attr - baseline[None, :]).mean(1).numpy()  # type: ignore[operator]
    return ModelResult(
        name=name,
        n_components=C,
        loop_s=loop_s,
        loop_sampled=len(pick),
        tl_s=tl_s,
        tl_max_diff=max_diff_tl,
        exact_s=exact_s,
        attribution_s=attr_s,
        max_diff=max_diff,
        max_effect=float(abs(exact_effect).max()),
        spearman=float(spearmanr(exact_effect, attr_effect).statistic),
        spearman_abs=float(spearmanr(abs(exact_effect), abs(attr_effect)).statistic),
        exact_flops=exact_flops(lm, clean, comps),
        loop_flops=(C + 1) * loop_flops(lm, clean),
        rates=rates,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-prompts", type=int, default=None, help="prompts per model (default 64; --quick 16)")
    parser.add_argument("--quick", action="store_true", help="16 prompts and a 6-component loop sample")
    parser.add_argument("--loop-sample", type=int, default=None, help="components per model run in the loop (default 8)")
    parser.add_argument("--full-loop", action="store_true", help="run the loop over every component (slow)")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--ablation", default="mean", choices=[a.value for a in Ablation])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.n_prompts = args.n_prompts or (16 if args.quick else 64)
    args.loop_sample = args.loop_sample or (6 if args.quick else 8)
    torch.manual_seed(args.seed)
    t_dir, s_dir = model_dirs(args.seed)
    t_cfg, s_cfg = AutoConfig.from_pretrained(t_dir), AutoConfig.from_pretrained(s_dir)
    print(f"circuitdiff sweep benchmark: teacher {t_cfg.n_layer}L x {t_cfg.n_head}H x {t_cfg.n_embd}d "
          f"(vocab {t_cfg.vocab_size}), student {s_cfg.n_layer}L; task {args.task}, {args.n_prompts} prompts, "
          f"{args.ablation} ablation; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    results = [bench_model(str(f), name, args) for name, f in (("teacher", t_dir), ("student", s_dir))]
    rates = [r for res in results for r in res.rates]
    during = sum(rates) / len(rates)
    print(f"matrix-multiply throughput (float32, {len(rates)} probes during the sweeps): mean {during / 1e9:.1f} "
          f"GFLOP/s, best {max(rates) / 1e9:.1f}, worst {min(rates) / 1e9:.1f} (the machine is shared)")
    print()
    print(f"{'model':8} {'comps':>5} {'loop s':>7} {'TL s':>7} {'exact s':>7} {'attr s':>7} {'exact x':>8} "
          f"{'attr x':>7} {'max|dE|':>8} {'max|E|':>8} {'rho':>5} {'rho|E|':>6} {'GFLOP':>6} {'limit s':>7} {'of limit':>8}")
    tot = ModelResult("both", 0, 0, 0, None, None, 0, 0, 0, 0, float("nan"), float("nan"), 0, 0, rates)
    for r in results:
        tot.n_components += r.n_components
        tot.loop_s += r.loop_s
        tot.exact_s += r.exact_s
        tot.attribution_s += r.attribution_s
        tot.max_diff = max(tot.max_diff, r.max_diff)
        tot.max_effect = max(tot.max_effect, r.max_effect)
        tot.exact_flops += r.exact_flops
        tot.loop_flops += r.loop_flops
        if r.tl_s is not None:
            tot.tl_s = (tot.tl_s or 0.0) + r.tl_s
            tot.tl_max_diff = max(tot.tl_max_diff or 0.0, r.tl_max_diff or 0.0)
    for r in [*results, tot]:
        rate = sum(r.rates) / len(r.rates)
        limit = r.exact_flops / rate
        tl = "n/a" if r.tl_s is None else f"{r.tl_s:.1f}"
        print(f"{r.name:8} {r.n_components:5d} {r.loop_s:7.1f} {tl:>7} {r.exact_s:7.1f} {r.attribution_s:7.2f} "
              f"{r.loop_s / r.exact_s:7.2f}x {r.loop_s / r.attribution_s:6.1f}x {r.max_diff:8.1e} {r.max_effect:8.1e} "
              f"{r.spearman:5.2f} {r.spearman_abs:6.2f} {r.exact_flops / 1e9:6.0f} {limit:7.1f} {limit / r.exact_s:8.2f}")
    print()
    loop_note = "every component" if args.full_loop else (
        f"{results[0].loop_sampled}+{results[1].loop_sampled} sampled forwards, times (components + 1)")
    tl_note = "not installed" if tot.tl_s is None else f"max |TL - exact| {tot.tl_max_diff:.1e}"
    print(f"loop: {loop_note}; loop FLOPs {tot.loop_flops / 1e12:.1f} T vs exact {tot.exact_flops / 1e12:.1f} T; "
          f"TransformerLens: {tl_note}")
    print("exact x / attr x: speed-up over the loop; max|dE|: max |exact - loop| over the loop's components and prompts; "
          "max|E|: largest mean effect; rho: Spearman of attribution vs exact mean effects (rho|E|: of their sizes); "
          "limit s: exact GFLOP / mean throughput during the sweep")
    limit, limit_best = tot.exact_flops / during, tot.exact_flops / max(rates)
    tl_ratio = "" if tot.tl_s is None else f"exact_vs_transformerlens={tot.tl_s / tot.exact_s:.2f}x "
    print(f"RATIOS exact_vs_loop={tot.loop_s / tot.exact_s:.2f}x {tl_ratio}attribution_vs_loop="
          f"{tot.loop_s / tot.attribution_s:.1f}x exact_vs_limit={tot.exact_s / limit:.2f}x "
          f"(fraction {limit / tot.exact_s:.2f}; {limit_best / tot.exact_s:.2f} of the best throughput seen) "
          f"max_diff={tot.max_diff:.1e} spearman_teacher={results[0].spearman:.2f} spearman_student={results[1].spearman:.2f}")


if __name__ == "__main__":
    main()
