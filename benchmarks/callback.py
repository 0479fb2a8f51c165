"""The Trainer callback's cost: per call against a plain compare, and its share of a training run.

The shipped student (tiny-distilgpt2) is trained by ``transformers.Trainer`` on the shipped
Austen sample (causal LM loss, batch 8 of 64 tokens) for ``--steps`` steps, twice from the
same seed: without the callback, and with ``CircuitDiffCallback`` comparing it with the
shipped teacher every ``--every`` steps. Then a plain ``compare`` of the saved final
checkpoint is timed with the same options (it loads both models and runs the teacher and
the random students, which the callback does once for the whole run). Printed: seconds per
call (the first, with the teacher's runs and the null, and the later ones), their ratio to
the plain compare, and the callback's share of the run's wall time; for the callback's
defaults and for a cheap setting (fewer prompts, attribution, no circuits, fewer resamples).

    python benchmarks/callback.py [--steps 200] [--every 50] [--tasks ioi]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import common  # puts src/ on the path; one_thread_scratch

SETTINGS: dict[str, dict[str, Any]] = {
    "defaults (32 prompts, exact, circuits, 10 random students, 1000 resamples)": {},
    "cheap (16 prompts, attribution, no circuits, 200 resamples)": dict(n_prompts=16, method="attribution",
                                                                       circuits=False, n_boot=200),
}


def train(out: Path, steps: int, callback: Any = None, report_to: str = "none") -> float:
    """Wall seconds of ``steps`` Trainer steps of the shipped student on the Austen sample."""
    import transformers as T

    from circuitdiff.lab.corpus import load_corpus
    from circuitdiff.models.loading import resolve

    folder = resolve("tiny-distilgpt2")[0]
    tokenizer = T.AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.eos_token
    ids = [i for p in load_corpus()[:2000] for i in tokenizer(p)["input_ids"]]
    blocks = [{"input_ids": ids[i:i + 64], "labels": ids[i:i + 64]} for i in range(0, len(ids) - 64, 64)]
    T.set_seed(0)
    model = T.AutoModelForCausalLM.from_pretrained(folder)
    args = T.TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=3e-4,
                               logging_steps=50, save_strategy="steps", save_steps=steps, report_to=report_to,
                               use_cpu=True, seed=0, disable_tqdm=True)
    trainer = T.Trainer(model=model, args=args, train_dataset=blocks, processing_class=tokenizer,
                        callbacks=[callback] if callback is not None else None)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--tasks", default="ioi")
    args = parser.parse_args()
    from circuitdiff.compare import compare
    from circuitdiff.integrations import CircuitDiffCallback

    tasks = args.tasks.split(",")
    work = common.one_thread_scratch("callback")
    bare = train(work / "bare", args.steps)
    print(f"training alone: {args.steps} steps in {bare:.1f} s ({1000 * bare / args.steps:.0f} ms/step)")
    for label, options in SETTINGS.items():
        callback = CircuitDiffCallback("tiny-gpt2", tasks, every_n_steps=args.every, report=False, **options)
        run = work / label.split()[0]
        wall = train(run, args.steps, callback)
        start = time.perf_counter()
        compare("tiny-gpt2", str(run / f"checkpoint-{args.steps}"), tasks, callback.options, progress=False,
                report=False)
        plain = time.perf_counter() - start
        first, later = callback.seconds[0], callback.seconds[1:]
        per_call, last = sum(later) / len(later), callback.seconds[-1]
        print(f"{label}:\n  {len(callback.seconds)} calls; first {first:.2f} s, later {per_call:.2f} s each; "
              f"the last call (the final checkpoint's weights) {last:.2f} s vs a plain compare of that checkpoint "
              f"{plain:.2f} s: {last / plain:.2f}x\n"
              f"  run {wall:.1f} s with the callback vs {bare:.1f} s without: callback {sum(callback.seconds):.1f} s "
              f"= {100 * sum(callback.seconds) / wall:.0f}% of the run (every {args.every} steps)")


if __name__ == "__main__":
    main()
