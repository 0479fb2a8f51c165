"""Shared pytest fixtures. Each team keeps its fixtures in its own block below."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach the Hugging Face Hub
os.environ.pop("CIRCUITDIFF_NULL_CACHE", None)  # a developer's cache must not stand in for the draws tests make

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ROOT = Path(__file__).resolve().parent.parent


# --- tasks: real GPT-2 BPE and BERT uncased WordPiece tokenizers, offline ------------------
# Built by scripts/fetch_test_assets.sh into tests/assets/ (git-ignored); run here if missing.

ASSETS = ROOT / "tests" / "assets"


def _tokenizer_dir(name: str) -> Path:
    path = ASSETS / name
    if not (path / "tokenizer.json").is_file():
        script = ROOT / "scripts" / "fetch_test_assets.sh"
        env = {**os.environ, "PYTHON": sys.executable}
        done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
        if done.returncode != 0 or not (path / "tokenizer.json").is_file():
            pytest.fail(f"{script} failed to build {path}:\n{done.stdout}\n{done.stderr}")
    return path


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    return _tokenizer_dir("gpt2-tokenizer")


@pytest.fixture(scope="session")
def bert_tokenizer_dir() -> Path:
    return _tokenizer_dir("bert-tokenizer")


@pytest.fixture(scope="session")
def gpt2_tokenizer(gpt2_tokenizer_dir: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir))


@pytest.fixture(scope="session")
def bert_tokenizer(bert_tokenizer_dir: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(bert_tokenizer_dir))


# --- end tasks ------------------------------------------------------------------------------


# --- shared: torch threads -----------------------------------------------------------
@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: a second thread only adds synchronisation (6x slower on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
