"""Training rows: corpus chunks plus task prompts, tokenised exactly as evaluation does.

Task rows come from ``encode_task`` itself (prompt ids + the answer's tokens), so the model
trains on the very token sequence it is scored on: a causal model's answer of several tokens
is the teacher-forced continuation the metric sums over, and every one of its tokens carries
the answer weight. One document per row, starting at position 0 like an evaluation prompt;
batches are right-padded to their longest row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from circuitdiff.errors import TaskEncodingError
from circuitdiff.lab.corpus import load_corpus
from circuitdiff.lab.errors import LabError
from circuitdiff.lab.recipe import DataRecipe, Kind
from circuitdiff.tasks import BUILTIN_TASKS, MASK, Task, encode_task, get_task, task_vocabulary, training_prompts
from circuitdiff.tasks.base import TaskPrompt
from circuitdiff.tasks.encode import EncodedTask, drop_multi_token_items

EVAL_SEEDS = range(10)
EVAL_N = 256
"""Training prompts equal to an evaluation prompt (seeds 0..9, 256 each) are dropped."""
MIN_CHUNK = 4
REPEAT = "repeat"


@dataclass
class Row:
    """One document: token ids and, for a task prompt, where its answer sits
    (``answer_len`` tokens from ``answer_pos``; a masked LM's answer is its one mask position)."""

    ids: list[int]
    answer_pos: int = -1
    task: str = ""
    answer_len: int = 1


@dataclass
class Pool:
    """All training rows and a summary for the model card."""

    rows: list[Row]
    summary: dict[str, Any] = field(default_factory=dict)


def filled_text(p: TaskPrompt, masked: bool) -> str:
    """The prompt with its answer in place, as running text (for tokenizer training)."""
    if not masked:
        return p.prompt + p.answer
    i = p.prompt.index(MASK)
    return p.prompt[:i] + p.answer.lstrip() + p.prompt[i + len(MASK):]


def _task_strings(kind: Kind, n_prompts: int, vocabulary: bool) -> list[str]:
    """Per built-in task: its words (with and without a space) if asked, then every answer and
    distractor drawn from both seed streams. The order fixes the forced merges, so keep it."""
    masked = kind == "masked"
    out: dict[str, None] = {}
    for name in BUILTIN_TASKS:
        if vocabulary:
            for word in task_vocabulary(name):
                out[" " + word] = None
                out[word] = None
        for task in (get_task(name, n_prompts, 0, masked), training_prompts(name, n_prompts, 0, masked)):
            for p in task.prompts:
                out[p.answer] = None
                out[p.distractor] = None
    return list(out)


def answer_strings(kind: Kind, n_prompts: int = 2000) -> list[str]:
    """Every answer and distractor of every built-in task: these must be single tokens."""
    return _task_strings(kind, n_prompts, vocabulary=False)


def required_tokens(kind: Kind, n_prompts: int = 2000) -> list[str]:
    """Answers and distractors plus task words with and without a leading space (single
    tokens there keep prompts short; only the answers are a hard requirement)."""
    return _task_strings(kind, n_prompts, vocabulary=True)


def tokenizer_texts(kind: Kind, data: DataRecipe, seed: int, per_task: int = 1000) -> list[str]:
    """Corpus paragraphs plus filled task prompts: what the tokenizer is trained on."""
    texts = load_corpus(data.corpus)
    for name in data.tasks:
        task = training_prompts(name, per_task, seed, kind == "masked")
        texts.extend(filled_text(p, kind == "masked") for p in task.prompts)
    return texts


def _dedupe(name: str, task: Task) -> tuple[Task, int]:
    """Drop prompts seen in evaluation, unless that would drop most of them (tiny task spaces,
    and ``facts``, whose prompts are the fact table itself: recall is of facts seen in training)."""
    seen = {p.prompt for s in EVAL_SEEDS for p in get_task(name, EVAL_N, s, task.masked).prompts}
    kept = [i for i, p in enumerate(task.prompts) if p.prompt not in seen]
    if len(kept) < len(task.prompts) // 2:
        return task, len(task.prompts) - len(kept)
    return task.select(kept), 0


def task_rows(enc: EncodedTask, name: str) -> list[Row]:
    """One row per prompt: a causal prompt up to its read position followed by every token of its
    answer (the continuation the metric teacher-forces), or a masked prompt with its answer in the
    mask slot (``collate`` masks it again; it is the label)."""
    rows = []
    for r in range(enc.n):
        length, pos, answer = int(enc.attention_mask[r].sum()), int(enc.read_pos[r]), enc.continuation(r).tolist()
        ids = enc.input_ids[r, :length].tolist()
        if enc.masked:
            ids[pos] = answer[0]
            rows.append(Row(ids, pos, name))
        else:
            rows.append(Row(ids[: pos + 1] + answer, pos + 1, name, len(answer)))
    return rows


def build_pool(kind: Kind, tokenizer: Any, data: DataRecipe, seed: int, context: int) -> Pool:
    """Task rows (deduplicated against evaluation where possible) and corpus chunk rows.

    Task rows longer than ``context`` are dropped (and counted); a task left with none is an error.
    A causal row is the prompt followed by all of its answer's tokens. A masked LM scores one mask
    position, so ``facts`` drops the items its tokenizer splits and ``encode_task`` refuses any other
    split answer by name (as every analysis of a masked LM does).
    """
    masked = kind == "masked"
    if data.chunk_tokens > context:
        raise LabError(f"chunk_tokens={data.chunk_tokens} exceeds the model context {context}")
    rows: list[Row] = []
    summary: dict[str, Any] = {"tasks": {}}
    for name in data.tasks:
        task, overlap = _dedupe(name, training_prompts(name, data.prompts_for(name), seed, masked))
        try:
            (kept,), _ = drop_multi_token_items([task], [tokenizer]) if masked else ((task,), None)
            enc = encode_task(kept, tokenizer)
        except TaskEncodingError as exc:
            raise LabError(f"{exc}; leave '{name}' out of the training tasks") from None
        before = len(rows)
        rows.extend(row for row in task_rows(enc, name) if len(row.ids) <= context)
        if len(rows) == before:
            raise LabError(f"every '{name}' training prompt is longer than the model context ({context} tokens)")
        summary["tasks"][name] = {"rows": len(rows) - before, "too_long": enc.n - (len(rows) - before),
                                  "eval_overlap_kept": overlap, "multi_token_dropped": len(task) - len(kept)}
    task_tokens = sum(len(r.ids) for r in rows)
    corpus_rows = corpus_chunks(tokenizer, data, masked, seed)
    rows.extend(corpus_rows)
    corpus_tokens = sum(len(r.ids) for r in corpus_rows)
    summary.update(corpus=data.corpus, corpus_rows=len(corpus_rows), corpus_tokens=corpus_tokens,
                   repeated_rows=sum(r.task == REPEAT for r in corpus_rows), task_tokens=task_tokens,
                   task_token_fraction=round(task_tokens / max(1, task_tokens + corpus_tokens), 3))
    return Pool(rows, summary)


def corpus_chunks(tokenizer: Any, data: DataRecipe, masked: bool, seed: int) -> list[Row]:
    """Paragraphs cut into chunks; a ``repeat_fraction`` of them become "half-chunk + same again".

    Repeated text makes every token of the second half predictable by copying, the signal
    that grows induction heads quickly, which IOI and the induction task both build on.
    """
    chunk = data.chunk_tokens - (2 if masked else 0)
    pieces: list[list[int]] = []
    encoded = tokenizer.backend_tokenizer.encode_batch(load_corpus(data.corpus), add_special_tokens=False)
    for para_ids in (e.ids for e in encoded):  # the fast backend: no "longer than max length" warnings
        for start in range(0, len(para_ids), chunk):
            if len(para_ids[start : start + chunk]) >= MIN_CHUNK:
                pieces.append(para_ids[start : start + chunk])
    if data.corpus_max_chunks is not None:
        pieces = pieces[: data.corpus_max_chunks]
    gen = torch.Generator().manual_seed(seed)
    repeat = (torch.rand(len(pieces), generator=gen) < data.repeat_fraction).tolist()
    rows = []
    for piece, rep in zip(pieces, repeat):
        if rep:
            half = piece[: max(MIN_CHUNK, chunk // 2)]
            piece = half + half
        ids = [tokenizer.cls_token_id, *piece, tokenizer.sep_token_id] if masked else piece
        rows.append(Row(ids, task=REPEAT if rep else ""))
    return rows


def batch_indices(n_rows: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Rows of batch ``step``: a fixed function of (seed, step), so a resumed run sees the same data."""
    out: list[int] = []
    for g in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(g, n_rows)
        out.append(int(_permutation(n_rows, seed, epoch)[offset]))
    return out


_PERM_CACHE: dict[tuple[int, int, int], Tensor] = {}


def _permutation(n: int, seed: int, epoch: int) -> Tensor:
    key = (n, seed, epoch)
    if key not in _PERM_CACHE:
        if len(_PERM_CACHE) > 8:
            _PERM_CACHE.clear()
        _PERM_CACHE[key] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return _PERM_CACHE[key]


def collate(rows: list[Row], kind: Kind, tokenizer: Any, mlm_probability: float, generator: torch.Generator) -> dict[str, Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``labels``/``answer_mask``; MLM masking if masked.

    ``answer_mask`` marks each task row's answer tokens (their label positions), for loss weighting.
    """
    width = max(len(r.ids) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
        att[i, : len(r.ids)] = 1
    answer = torch.zeros_like(att, dtype=torch.bool)
    for i, r in enumerate(rows):
        if r.answer_pos >= 0:
            answer[i, r.answer_pos : r.answer_pos + r.answer_len] = True
    if kind == "causal":
        return {"input_ids": ids, "attention_mask": att, "labels": ids.masked_fill(att == 0, -100), "answer_mask": answer}
    special = torch.tensor(sorted(tokenizer.all_special_ids))
    ordinary = (att == 1) & ~torch.isin(ids, special) & ~answer
    chosen = ordinary & (torch.rand(ids.shape, generator=generator) < mlm_probability)
    labels = ids.masked_fill(~(chosen | answer), -100)
    roll = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[(chosen & (roll < 0.8)) | answer] = tokenizer.mask_token_id
    randomise = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[randomise] = torch.randint(len(special), len(tokenizer), ids.shape, generator=generator)[randomise]
    return {"input_ids": inputs, "attention_mask": att, "labels": labels, "answer_mask": answer}


def batches(pool: Pool, kind: Kind, tokenizer: Any, data: DataRecipe, batch_size: int, seed: int,
            start_step: int, steps: int) -> Iterator[tuple[int, dict[str, Tensor]]]:
    """(step, batch) from ``start_step`` to ``steps``; each batch depends only on (seed, step)."""
    for step in range(start_step, steps):
        rows = [pool.rows[i] for i in batch_indices(len(pool.rows), batch_size, step, seed)]
        gen = torch.Generator().manual_seed(seed * 7_919 + step)
        yield step, collate(rows, kind, tokenizer, data.mlm_probability, gen)
