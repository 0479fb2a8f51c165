"""Small tokenizers for the lab: byte-level BPE (causal) and uncased WordPiece (masked).

Both are built from the corpus plus task text and *forced* so that every answer and
distractor of the built-in tasks is one token: a BPE gets extra merges appended (lowest
priority, so nothing else changes), a WordPiece vocabulary lists those words outright.
Both are deterministic, so a rebuild reproduces the shipped tokenizers exactly. Digits are
pre-split into groups of at most two, so " 1745" is " 17" + "45" as the greater-than
task expects (its answer continues the " 17" token), while " 5" and " 45" stay whole.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast


EOS = "<|endoftext|>"
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}{1,2}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2's pre-tokenizer pattern with numbers cut into 1-2 digit pieces."""


def _bpe_pipeline() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def _force_bpe(tok: Tokenizer, required: Iterable[str]) -> tuple[Tokenizer, list[str]]:
    """Append merges so each required string that is one pre-token becomes a single token."""
    state = json.loads(tok.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    merges: list = state["model"]["merges"]
    as_strings = bool(merges) and isinstance(merges[0], str)
    added: list[str] = []
    for text in required:
        pieces = tok.pre_tokenizer.pre_tokenize_str(text)
        if len(pieces) != 1:
            continue  # can never be one token; the caller's answer check reports it if it matters
        parts = [t.value for t in tok.model.tokenize(pieces[0][0])]
        if len(parts) == 1:
            continue
        current = parts[0]
        for nxt in parts[1:]:
            merges.append(f"{current} {nxt}" if as_strings else [current, nxt])
            current += nxt
            if current not in vocab:
                vocab[current] = len(vocab)
        added.append(text)
        tok = Tokenizer.from_str(json.dumps(state))
    return tok, added


def train_bpe(texts: Iterable[str], vocab_size: int, required: Sequence[str], max_length: int) -> PreTrainedTokenizerFast:
    """A GPT-2 style byte-level BPE in which every string in ``required`` is one token."""
    tok = _bpe_pipeline()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    tok, _ = _force_bpe(tok, required)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, model_max_length=max_length,
    )


PIECE_SHARE = 0.2
"""Share of the WordPiece vocabulary given to sub-word pieces (prefixes and ##suffixes)."""


def wordpiece_vocab(words: Counter[str], vocab_size: int, required: Sequence[str]) -> list[str]:
    """A deterministic WordPiece vocabulary (``tokenizers``' WordPiece trainer is not:
    ties are broken in hash order, so two runs give different ids and even tokens).

    Specials, every character alone and as ##c (so no word is ever [UNK]), the required
    words, the most frequent sub-word pieces of words that will not fit, then whole words
    by frequency. Ties go alphabetically.
    """
    chars = sorted({c for w in words for c in w})
    vocab = dict.fromkeys([*BERT_SPECIALS, *chars, *("##" + c for c in chars), *required])
    ranked = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if w not in vocab]
    n_words = max(0, int((vocab_size - len(vocab)) * (1 - PIECE_SHARE)))
    pieces: Counter[str] = Counter()
    for w in ranked[n_words:]:
        for k in range(2, min(6, len(w)) + 1):
            pieces[w[:k]] += words[w]
            pieces["##" + w[-k:]] += words[w]
    n_pieces = max(0, vocab_size - len(vocab) - n_words)
    best = [p for p, _ in sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0])) if p not in vocab][:n_pieces]
    vocab.update(dict.fromkeys(best))
    vocab.update(dict.fromkeys(ranked[: max(0, vocab_size - len(vocab))]))
    return list(vocab)


def train_wordpiece(texts: Iterable[str], vocab_size: int, required: Sequence[str], max_length: int) -> PreTrainedTokenizerFast:
    """A BERT uncased WordPiece ([CLS] ... [SEP]) in which every ``required`` word is one token."""
    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    pre = pre_tokenizers.BertPreTokenizer()

    def split(text: str) -> list[str]:
        return [w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text))]

    words: Counter[str] = Counter(w for t in texts for w in split(t))
    forced = [ws[0] for ws in map(split, required) if len(ws) == 1]
    vocab = wordpiece_vocab(words, vocab_size, forced)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
        cls_token="[CLS]", mask_token="[MASK]", model_max_length=max_length,
    )


def single_token_failures(tokenizer: PreTrainedTokenizerFast, texts: Iterable[str]) -> list[str]:
    """Strings in ``texts`` that the tokenizer does not encode as exactly one token."""
    return [t for t in texts if len(tokenizer(t, add_special_tokens=False)["input_ids"]) != 1]
