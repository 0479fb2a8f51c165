"""Paired activations of two models at one site each, streamed in chunks.

The site is the residual stream after a block: a forward hook on the real block module reads its output
(the forward stops there, so the later blocks cost nothing). Each model reads its own tokenisation of the
same text; a pair is a teacher position and a student position whose tokens end at the same character
(``features.pairing``), which with one tokenizer for both is every position with itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from circuitdiff.analysis.cka import linear_cka
from circuitdiff.errors import CircuitDiffError
from circuitdiff.features.pairing import as_rows, cut_rows, pair_by_ends
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.loading import LoadedModel
from circuitdiff.tasks.encode import pad_id
from circuitdiff.tasks.spans import text_spans


class FeaturesError(CircuitDiffError):
    """Bad input to ``circuitdiff features`` (one line, exit 2)."""


class _Stop(Exception):
    """Raised by the site hook once the site is read: the blocks after it need not run."""


def block_output(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def read_site(adapter: Adapter, layer: int, stop: bool = True) -> Iterator[list[torch.Tensor]]:
    """Inside the block, the list receives block ``layer``'s output (batch, seq, d_model) of each forward."""
    seen: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, _args: tuple, output: torch.Tensor | tuple) -> None:
        seen.append(block_output(output).detach())
        if stop:
            raise _Stop

    handle = adapter.blocks()[layer].register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def site_activations(lm: LoadedModel, layer: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Block ``layer``'s output on these rows, (batch, seq, d_model), float32 on the model's device."""
    with torch.no_grad(), read_site(lm.adapter, layer) as seen:
        try:
            lm.adapter.base_forward(input_ids.to(lm.device), attention_mask.to(lm.device))
        except _Stop:
            pass
    return seen[0].float()


def default_teacher_layer(n_layers: int) -> int:
    """The block at about two thirds of the depth (index of the block whose output is read)."""
    return max(0, round(2 * n_layers / 3) - 1)


@dataclass(frozen=True)
class Rows:
    """Token rows both models read: ids, mask, and which positions are training/analysis tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    source: tuple[str, ...]
    """Where each row came from: 'corpus' or a task name."""

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def token_mask(self) -> torch.Tensor:
        """Real tokens other than each row's first (a first position is an attention sink with a huge norm)."""
        mask = self.attention_mask.bool().clone()
        mask[:, 0] = False
        return mask


def text_rows(texts: Sequence[str], tokenizer, context: int, source: str = "corpus") -> Rows:  # noqa: ANN001
    """Tokenise texts into rows of at most ``context`` tokens (long texts are cut into several rows)."""
    rows: list[list[int]] = []
    for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        rows.extend(ids[i:i + context] for i in range(0, len(ids), context) if len(ids[i:i + context]) > 1)
    if not rows:
        raise FeaturesError("the corpus holds no text to read activations from")
    return pad_rows(rows, tokenizer, (source,) * len(rows))


def pad_rows(rows: Sequence[Sequence[int]], tokenizer, source: tuple[str, ...]) -> Rows:  # noqa: ANN001
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return Rows(ids, mask, source)


def concat_rows(parts: Sequence[Rows], tokenizer) -> Rows:  # noqa: ANN001
    """One row set from several (padded to the widest)."""
    rows = [r[m.bool()].tolist() for p in parts for r, m in zip(p.input_ids, p.attention_mask)]
    return pad_rows(rows, tokenizer, tuple(s for p in parts for s in p.source))


@dataclass(frozen=True)
class PairedRows:
    """Both models' token rows of the same texts and the paired positions: the training/analysis tokens."""

    teacher: Rows
    student: Rows
    pairs: torch.Tensor
    """(n, 3) long: row, teacher position, student position; in row then teacher-position order."""

    def __len__(self) -> int:
        return len(self.teacher)

    @property
    def source(self) -> tuple[str, ...]:
        return self.teacher.source

    @staticmethod
    def same(rows: Rows) -> PairedRows:
        """One tokenisation for both models: every real position but a row's first is paired with itself."""
        where = rows.token_mask().nonzero()
        return PairedRows(rows, rows, torch.cat([where, where[:, 1:]], 1))

    def head(self, n: int) -> PairedRows:
        cut = [Rows(r.input_ids[:n], r.attention_mask[:n], r.source[:n]) for r in (self.teacher, self.student)]
        return PairedRows(*cut, self.pairs[self.pairs[:, 0] < n])


def paired_text_rows(texts: Sequence[str], tokenizers: tuple, context: int | tuple[int, int],
                     source: str = "corpus") -> PairedRows:
    """Each model tokenises the texts itself; rows of at most ``context`` (teacher, student) tokens, cut where
    both tokenisations start a token (``features.pairing.cut_rows``), and their positions paired by common ends."""
    context = (context, context) if isinstance(context, int) else context
    if not all(getattr(tok, "is_fast", False) for tok in tokenizers):
        if tokenizers[0] is tokenizers[1] and context[0] == context[1]:  # no offsets needed: every position pairs itself
            return PairedRows.same(text_rows(texts, tokenizers[0], context[0], source))
        raise FeaturesError("pairing two tokenisations needs fast tokenizers (their offset mappings)")
    rows: tuple[list[list[int]], list[list[int]]] = ([], [])
    pairs: list[list[tuple[int, int]]] = []
    for text in texts:
        (t_ids, t_spans), (s_ids, s_spans) = (text_spans(text, tok, add_special_tokens=False) for tok in tokenizers)
        try:
            cuts = cut_rows(t_spans, s_spans, text, context)
        except ValueError as err:
            raise FeaturesError(f"cannot pair the two tokenisations: {err}") from err
        for t_sl, s_sl, aligned in cuts:
            if t_sl.stop - t_sl.start < 2 or s_sl.stop == s_sl.start:  # a teacher row of its sink alone pairs nothing
                continue
            rows[0].append(t_ids[t_sl])
            rows[1].append(s_ids[s_sl])
            pairs.append(pair_by_ends(t_spans[t_sl], s_spans[s_sl]) if aligned else [])
    if not rows[0]:
        raise FeaturesError("the corpus holds no text to read activations from")
    sources = (source,) * len(rows[0])
    return PairedRows(pad_rows(rows[0], tokenizers[0], sources), pad_rows(rows[1], tokenizers[1], sources),
                      torch.from_numpy(as_rows(pairs)))


def concat_paired(parts: Sequence[PairedRows], tokenizers: tuple) -> PairedRows:
    """One paired row set from several (padded to the widest; positions do not move)."""
    offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
    pairs = torch.cat([p.pairs + torch.tensor([int(o), 0, 0]) for p, o in zip(parts, offsets, strict=True)])
    return PairedRows(concat_rows([p.teacher for p in parts], tokenizers[0]),
                      concat_rows([p.student for p in parts], tokenizers[1]), pairs)


@dataclass(frozen=True)
class Normaliser:
    """x -> (x - mean) / scale with E|x - mean|^2 = 1: both models' activations on one footing."""

    mean: torch.Tensor
    scale: float

    @staticmethod
    def fit(x: torch.Tensor) -> Normaliser:
        mean = x.double().mean(0)
        scale = float((x.double() - mean).square().sum(1).mean().sqrt())
        return Normaliser(mean.float(), max(scale, 1e-12))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.scale

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.mean.to(x.device)


@dataclass(frozen=True)
class Chunk:
    """Paired tokens: (tokens, d_t) and (tokens, d_s), and where each token sits (row, position)."""

    teacher: torch.Tensor
    student: torch.Tensor
    where: torch.Tensor


def stream_pairs(teacher: LoadedModel, student: LoadedModel, layers: tuple[int, int], rows: PairedRows,
                 rows_per_forward: int = 32, chunk_tokens: int = 8192) -> Iterator[Chunk]:
    """Yield paired raw activations in chunks of about ``chunk_tokens``: memory does not grow with the corpus.
    ``Chunk.where`` is (row, teacher position)."""
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    held = 0
    for start in range(0, len(rows), rows_per_forward):
        here = rows.pairs[(rows.pairs[:, 0] >= start) & (rows.pairs[:, 0] < start + rows_per_forward)]
        acts = []
        for lm, layer, side, col in ((teacher, layers[0], rows.teacher, 1), (student, layers[1], rows.student, 2)):
            ids, att = _trimmed_rows(side, slice(start, start + rows_per_forward))
            a = site_activations(lm, layer, ids, att)
            acts.append(a[(here[:, 0] - start).to(a.device), here[:, col].to(a.device)])
        where = here[:, :2].clone()
        parts.append((acts[0], acts[1], where))
        held += len(where)
        if held >= chunk_tokens:
            yield Chunk(*(torch.cat(p) for p in zip(*parts)))
            parts, held = [], 0
    if parts:
        yield Chunk(*(torch.cat(p) for p in zip(*parts)))


def _trimmed_rows(rows: Rows, sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``sl`` cut to their longest real length."""
    ids, att = rows.input_ids[sl], rows.attention_mask[sl]
    width = int(att.sum(1).max())
    return ids[:, :width], att[:, :width]


def all_block_outputs(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
    """Every block's output on these rows (one forward), each (batch, seq, d_model)."""
    seen: list[torch.Tensor] = []
    handles = [block.register_forward_hook(lambda _m, _a, out: seen.append(block_output(out).detach().float()))
               for block in lm.adapter.blocks()]
    try:
        with torch.no_grad():
            lm.adapter.base_forward(input_ids.to(lm.device), attention_mask.to(lm.device))
    finally:
        for h in handles:
            h.remove()
    return seen


def match_student_layer(teacher: LoadedModel, student: LoadedModel, teacher_layer: int, rows: PairedRows,
                        max_tokens: int = 1500, seed: int = 0) -> tuple[int, list[float]]:
    """The student block whose output has the highest debiased linear CKA with the teacher's site, over paired
    tokens (the layer-CKA of ``analysis.pair.layer_cka``, on corpus tokens instead of read positions)."""
    n_rows = max(1, min(len(rows), max_tokens // max(1, rows.teacher.input_ids.shape[1] // 2)))
    here = rows.pairs[rows.pairs[:, 0] < n_rows]
    x = site_activations(teacher, teacher_layer, rows.teacher.input_ids[:n_rows], rows.teacher.attention_mask[:n_rows])
    x = x[here[:, 0].to(x.device), here[:, 1].to(x.device)]
    pick = torch.from_numpy(np.random.default_rng(seed).permutation(len(x))[:max_tokens])
    xs = x[pick.to(x.device)].double().cpu().numpy()
    scores = []
    for y in all_block_outputs(student, rows.student.input_ids[:n_rows], rows.student.attention_mask[:n_rows]):
        y = y[here[:, 0].to(y.device), here[:, 2].to(y.device)]
        scores.append(float(linear_cka(xs, y[pick.to(y.device)].double().cpu().numpy())))
    return int(np.argmax(scores)), scores
