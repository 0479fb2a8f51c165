"""Tiny random models of every supported family, saved like a user's local checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as T
from tokenizers import Tokenizer, models, pre_tokenizers

VOCAB = 64
FAMILIES = ("gpt2", "bert", "distilbert", "llama", "gpt_neox")


def tiny_config(family: str, n_layers: int = 2, n_heads: int = 4, d_model: int = 32):
    common = dict(vocab_size=VOCAB)
    if family == "gpt2":
        return T.GPT2Config(n_layer=n_layers, n_head=n_heads, n_embd=d_model, n_positions=64, bos_token_id=1, eos_token_id=1, **common)
    if family == "bert":
        return T.BertConfig(num_hidden_layers=n_layers, num_attention_heads=n_heads, hidden_size=d_model,
                            intermediate_size=4 * d_model, max_position_embeddings=64, **common)
    if family == "distilbert":
        return T.DistilBertConfig(n_layers=n_layers, n_heads=n_heads, dim=d_model, hidden_dim=4 * d_model,
                                  max_position_embeddings=64, **common)
    if family == "llama":  # grouped-query attention: 2 query heads per key/value head
        return T.LlamaConfig(num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads // 2,
                             hidden_size=d_model, intermediate_size=3 * d_model, max_position_embeddings=64,
                             bos_token_id=1, eos_token_id=1, pad_token_id=0, **common)
    if family == "gpt_neox":
        return T.GPTNeoXConfig(num_hidden_layers=n_layers, num_attention_heads=n_heads, hidden_size=d_model,
                               intermediate_size=4 * d_model, max_position_embeddings=64, bos_token_id=1, eos_token_id=1, **common)
    raise ValueError(family)


MODEL_CLASSES = {
    "gpt2": T.GPT2LMHeadModel,
    "bert": T.BertForMaskedLM,
    "distilbert": T.DistilBertForMaskedLM,
    "llama": T.LlamaForCausalLM,
    "gpt_neox": T.GPTNeoXForCausalLM,
}


def tiny_model(family: str, seed: int = 0, **kw: int) -> T.PreTrainedModel:
    torch.manual_seed(seed)
    model = MODEL_CLASSES[family](tiny_config(family, **kw))
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
