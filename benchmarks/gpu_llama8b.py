"""GPU benchmark on the study's largest shape: a Llama-3.1-8B-shaped random model in bfloat16.

    python benchmarks/gpu_llama8b.py                      # on a GPU: 8B shape, 64 IOI prompts, H100/H200 peak
    python benchmarks/gpu_llama8b.py --peak-tflops 312    # another accelerator's dense bf16 peak (A100: 312)
    python benchmarks/gpu_llama8b.py --tiny               # the same steps on CPU with a tiny Llama (a check)

Steps, printed as they finish:
  1. build a random teacher of the shape (32 layers, 32 query / 8 key-value heads, width 4096, MLP 14336,
     vocabulary 128256) in bfloat16 and its 16-layer depth-pruned student (``lab.student_init.depth_pruned``,
     every other layer: the Minitron-4B-Depth shape); save both as ordinary checkpoints;
  2. the exact node sweep of the teacher over ``--n-prompts`` IOI prompts (mean ablation, memory budget
     half the free GPU memory, as ``compare --max-memory auto``), timed after a warm-up; its matmul FLOPs
     are counted from the sweep's own plan with torch's FlopCounterMode (one prompt per width, per block),
     and reported as a fraction of ``--peak-tflops`` (dense bf16; default 989, H100 SXM and H200);
  3. an end-to-end ``circuitdiff compare`` of the pair with ``--device-map auto --dtype bfloat16
     --max-memory auto``, everything on (circuits, 10 random students, intervals), on a task whose
     answer/distractor are the tokens both random models rank highest/lowest (so circuits run), timed.
The tokenizer is the shipped tiny-gpt2 pair's BPE (no download); its ids lie inside the 128k vocabulary.
Needs ``accelerate`` for ``--device-map auto`` (``pip install -e ".[accelerate]"``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT  # also puts src/ on sys.path

import torch

SHAPES = {
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192),
    "tiny": dict(hidden_size=64, intermediate_size=224, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4096, rope_theta=500000.0, max_position_embeddings=256),
}
H100_H200_BF16_DENSE_TFLOPS = 989.0
TOKENIZER = ROOT / "src" / "circuitdiff" / "pairs" / "tiny-gpt2"


def build_pair(shape: dict, folder: Path, device: str, seed: int) -> tuple[Path, Path]:
    """Random teacher of ``shape`` in bfloat16 and its depth-pruned student (every other layer), saved."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from circuitdiff.lab.student_init import depth_pruned

    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER))
    config = LlamaConfig(**shape, bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            teacher = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    student = depth_pruned(teacher, list(range(0, config.num_hidden_layers, 2)))
    paths = folder / "teacher", folder / "student"
    for model, path in zip((teacher, student), paths):
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    del teacher, student
    return paths


def measure_sweep(teacher: Path, args: argparse.Namespace) -> None:
    from sweep import exact_flops  # the sweep's FLOPs as exact_sweep plans it, read-out included

    from circuitdiff.interventions.ablation import Ablation, Replacement
    from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET, exact_sweep, record_activations
    from circuitdiff.models.loading import load_model
    from circuitdiff.pipeline import batches
    from circuitdiff.resources import auto_budget
    from circuitdiff.tasks import encode_task, get_task

    lm = load_model(str(teacher), device=args.device, dtype=torch.bfloat16)
    clean, corrupted = batches(encode_task(get_task("ioi", n_prompts=args.n_prompts, seed=args.seed), lm.tokenizer),
                               lm.device)
    budget = auto_budget(lm.device, DEFAULT_MEMORY_BUDGET)
    replacement = Replacement(Ablation.MEAN, record_activations(lm.adapter, corrupted, budget), n_base=len(clean))
    components = lm.adapter.components()
    last = [c for c in components if c.layer == lm.adapter.n_layers - 1]
    exact_sweep(lm.adapter, clean, replacement, last, memory_budget=budget)  # warm-up (kernels, allocator)
    sync = torch.cuda.synchronize if lm.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    exact_sweep(lm.adapter, clean, replacement, components, memory_budget=budget)
    sync()
    seconds = time.perf_counter() - t0
    flops = exact_flops(lm, clean, components, budget)
    rate = flops / seconds
    print(f"node sweep: {len(components)} components x {len(clean)} prompts (width {clean.input_ids.shape[1]}), "
          f"budget {budget / 2**30:.1f} GiB: {seconds:.2f} s, {flops / 1e12:.1f} TFLOP of matmuls, "
          f"{rate / 1e12:.1f} TFLOP/s = {rate / (args.peak_tflops * 1e12):.1%} of the {args.peak_tflops:g} TFLOP/s "
          f"bf16 peak (goal 40%)", flush=True)
    del lm, replacement
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_compare(teacher: Path, student: Path, folder: Path, args: argparse.Namespace) -> None:
    from compare import make_task

    task = folder / "ioi-top-bottom.jsonl"
    make_task(teacher, student, args.n_prompts, args.seed, task, device=args.device, dtype=torch.bfloat16)
    out = folder / "out"
    command = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
               "from circuitdiff.cli.main import main; main()", str(ROOT / "src"), "compare",
               "--teacher", str(teacher), "--student", str(student), "--task", str(task), "--n-prompts",
               str(args.n_prompts), "--dtype", "bfloat16", "--device-map", "auto", "--max-memory", "auto",
               "--out", str(out), "--seed", str(args.seed)]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"compare failed ({done.returncode}):\n{done.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    entry = next(iter(results["tasks"].values()))
    print(f"compare --device-map auto (everything on, {args.n_prompts} prompts): {wall:.1f} s wall; "
          f"alignment {str(entry.get('alignment'))[:160]}; circuits {str(entry.get('circuit'))[:240]}", flush=True)
    for warning in results["warnings"]:
        print(f"  compare warning: {warning}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny Llama on CPU: checks the script, measures nothing")
    parser.add_argument("--n-prompts", type=int, default=None, help="default 64 (--tiny: 8)")
    parser.add_argument("--peak-tflops", type=float, default=H100_H200_BF16_DENSE_TFLOPS,
                        help="the accelerator's dense bf16 peak in TFLOP/s (default: H100 SXM / H200)")
    parser.add_argument("--skip-compare", action="store_true", help="only the node sweep")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.n_prompts = args.n_prompts or (8 if args.tiny else 64)
    args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.device == "cpu" and not args.tiny:
        sys.exit("no CUDA device: the 8B shape needs a GPU (use --tiny to check the script on CPU)")
    name = "tiny" if args.tiny else "llama-3.1-8b"
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{name} shape {SHAPES[name]}, bfloat16, on {device_name}; torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        teacher, student = build_pair(SHAPES[name], Path(tmp), args.device, args.seed)
        print(f"built and saved teacher and 16-of-32-style depth-pruned student: {time.perf_counter() - t0:.1f} s",
              flush=True)
        measure_sweep(teacher, args)
        if not args.skip_compare:
            run_compare(teacher, student, Path(tmp), args)


if __name__ == "__main__":
    main()
