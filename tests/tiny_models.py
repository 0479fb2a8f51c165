"""Tiny random models of every registered family, saved like a user's local checkpoint.

The families and their configurations come from the adapter registry (``Adapter.tiny_config``):
a family added as one adapter file is built here, and covered by the invariant suite, unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as T
from tokenizers import Tokenizer, models, pre_tokenizers

from circuitdiff.models.adapters import ADAPTERS, SUPPORTED_MODEL_TYPES, adapter_class_for

VOCAB = 64
MODEL_TYPES: tuple[str, ...] = SUPPORTED_MODEL_TYPES
"""Every registered ``config.model_type`` (Mistral, Qwen2 and Qwen3 beside Llama)."""
FAMILIES: tuple[str, ...] = tuple(a.model_types[0] for a in ADAPTERS)
"""One model type per adapter class."""
CORE_FAMILIES = ("gpt2", "bert", "distilbert", "llama", "gpt_neox")
"""The five structural kinds (fused/separate q/k/v, Conv1D, post-LN, parallel, GQA) for the slower
whole-pipeline tests; every family goes through the invariant suite (test_invariants.py)."""
EDGE_FAMILIES: tuple[str, ...] = tuple(t for t in CORE_FAMILIES if adapter_class_for(t).edges_refusal is None)
"""The core families with edges, for the slower edge tests (test_invariants covers every family's edges)."""


VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "falcon-7b": ("falcon", {"new_decoder_architecture": False, "multi_query": True, "parallel_attn": True, "bias": False,
                             "num_kv_heads": None}),
    "falcon-rw": ("falcon", {"new_decoder_architecture": False, "multi_query": False, "parallel_attn": False, "alibi": True,
                             "num_kv_heads": None}),
    "falcon-2ln": ("falcon", {"num_ln_in_parallel_attn": 2}),
    "opt-350m": ("opt", {"do_layer_norm_before": False, "word_embed_proj_dim": 16}),
    "gpt_neox-sequential": ("gpt_neox", {"use_parallel_residual": False}),
}
"""Other layouts of a family, as (model type, config fields over its tiny config), for the invariant suite."""


def tiny_config(family: str, n_layers: int = 2, n_heads: int = 4, d_model: int = 32):
    base, overrides = VARIANTS.get(family, (family, {}))
    config = adapter_class_for(base).tiny_config(base, n_layers=n_layers, n_heads=n_heads, d_model=d_model, vocab=VOCAB)
    return type(config)(**{**config.to_dict(), **overrides}) if overrides else config


def model_class(family: str) -> type:
    base = VARIANTS.get(family, (family,))[0]
    return T.AutoModelForMaskedLM if adapter_class_for(base).masked_lm else T.AutoModelForCausalLM


def tiny_model(family: str, seed: int = 0, **kw: int) -> T.PreTrainedModel:
    torch.manual_seed(seed)
    model = model_class(family).from_config(tiny_config(family, **kw))
    _randomise_norms(model, seed)
    return model.eval()


def _randomise_norms(model: torch.nn.Module, seed: int) -> None:
    """Give norms and biases non-trivial values so that a wrong hook point cannot hide."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def word_tokenizer() -> T.PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over VOCAB made-up words, with mask and pad tokens."""
    words = ["[PAD]", "[BOS]", "[MASK]", "[UNK]"] + [f"w{i}" for i in range(VOCAB - 4)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return T.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[BOS]"
    )


def save_tiny(family: str, path: Path, seed: int = 0, **kw: int) -> Path:
    tiny_model(family, seed, **kw).save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return path


def save_gpt2_pair(folder: Path, tokenizer_dir: Path) -> dict[str, Path]:
    """A 2-layer teacher and a 1-layer student GPT-2 (width 16, 2 heads) with the real GPT-2 tokenizer, saved."""
    tok = T.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    paths = {}
    for role, layers in (("teacher", 2), ("student", 1)):
        torch.manual_seed(layers)
        model = T.GPT2LMHeadModel(T.GPT2Config(n_layer=layers, n_head=2, n_embd=16, vocab_size=len(tok), n_positions=64))
        paths[role] = folder / role
        model.save_pretrained(paths[role])
        tok.save_pretrained(paths[role])
    return paths
