"""``circuitdiff compare --edges exact`` with circuits on a tiny random model of every registered causal family.

    python scripts/families_compare.py            # every causal model type
    python scripts/families_compare.py gemma2 opt # some

Each model is the family's ``Adapter.tiny_config`` (2 layers, d_model 32, 4 heads, weights x5 so that
effects stand above rounding), compared with itself on a word task whose answers are its own top word
and distractors its bottom word (so it solves the task and its circuits are searched). The command
runs in-process through the real CLI (typer's runner). One line per family: exit code, seconds, node
circuit size at T = 0.2, number of edges scored, and the top-20 edge circuit's faithfulness.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from circuitdiff.cli.main import app  # noqa: E402
from circuitdiff.models.adapters import SUPPORTED_MODEL_TYPES, adapter_class_for  # noqa: E402
from tiny_models import tiny_model, word_tokenizer  # noqa: E402


def solved_task(model: torch.nn.Module, path: Path, n: int = 8, seed: int = 0) -> Path:
    """Prompts of five made-up words; the answer is the model's own top word, the distractor its lowest."""
    tok, rng, rows = word_tokenizer(), random.Random(seed), []
    for _ in range(n):
        words = " ".join(f"w{rng.randrange(10, 40)}" for _ in range(5))
        with torch.no_grad():
            logits = model(input_ids=tok(words, return_tensors="pt").input_ids).logits[0, -1, 4:]
        top, bottom = (tok.convert_ids_to_tokens(int(i) + 4) for i in (logits.argmax(), logits.argmin()))
        rows.append({"prompt": words, "answer": f" {top}", "distractor": f" {bottom}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(model_type: str, tmp: Path) -> str:
    model = tiny_model(model_type)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(5)
    folder = tmp / model_type
    model.save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    task = solved_task(model, tmp / f"{model_type}.jsonl")
    out = tmp / f"{model_type}-out"
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["compare", "--teacher", str(folder), "--student", str(folder), "--task", str(task),
                                      "--n-prompts", "8", "--n-boot", "10", "--no-null", "--no-report",
                                      "--edges", "exact", "--circuit-thresholds", "0.2", "--out", str(out)])
    seconds = time.perf_counter() - start
    if result.exit_code != 0:
        return f"{model_type:12s} exit {result.exit_code}: {repr(result.exception)[:300]}"
    tasks = json.loads((out / "results.json").read_text())["tasks"][task.name]
    circuit = tasks["circuit"]["thresholds"][0]["teacher"]
    edge = tasks["edge_circuits"][0]["teacher"]
    edges = tasks["teacher"]["edges"]
    return (f"{model_type:12s} exit 0 {seconds:5.1f}s  circuit(T=0.2) {circuit['size']:2d} components  "
            f"{edges['n_edges']:3d} edges ({'/'.join(edges['methods'])}), EAP-IG vs exact Spearman "
            f"{edges['spearman_vs_exact'].get('eap-ig', float('nan')):.3f}  top-20 edge circuit faithfulness "
            f"{edge['faithfulness']:.3f}")


def main(model_types: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for model_type in model_types:
            print(run(model_type, Path(tmp)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or [t for t in SUPPORTED_MODEL_TYPES if not adapter_class_for(t).masked_lm])
