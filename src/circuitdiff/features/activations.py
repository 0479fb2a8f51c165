"""Paired activations of two models at one site each, streamed in chunks.

The site is the residual stream after a block: a forward hook on the real block module reads its output
(the forward stops there, so the later blocks cost nothing). Both models see the same token rows, so the
pair is position by position; that needs one tokenisation for both (see ``check_same_tokenizer``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from circuitdiff.analysis.cka import linear_cka
from circuitdiff.errors import CircuitDiffError
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.loading import LoadedModel
from circuitdiff.tasks.encode import pad_id


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


def check_same_tokenizer(teacher: LoadedModel, student: LoadedModel) -> None:
    """Crosscoder pairs are position by position: both models must cut text into the same tokens."""
    probe = "The quick brown fox, 1234 jumped over Mary's lazy dog. Zebras!"
    same = (teacher.tokenizer.get_vocab() == student.tokenizer.get_vocab()
            and teacher.tokenizer(probe)["input_ids"] == student.tokenizer(probe)["input_ids"])
    if not same:
        raise FeaturesError(f"'{teacher.name}' and '{student.name}' tokenise text differently; the crosscoder pairs "
                            "activations token by token, so it needs one tokenizer for both models")


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


def stream_pairs(teacher: LoadedModel, student: LoadedModel, layers: tuple[int, int], rows: Rows,
                 rows_per_forward: int = 32, chunk_tokens: int = 8192) -> Iterator[Chunk]:
    """Yield paired raw activations in chunks of about ``chunk_tokens``: memory does not grow with the corpus."""
    mask = rows.token_mask()
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    held = 0
    for start in range(0, len(rows), rows_per_forward):
        sl = slice(start, start + rows_per_forward)
        ids, att, keep = rows.input_ids[sl], rows.attention_mask[sl], mask[sl]
        width = int(att.sum(1).max())
        ids, att, keep = ids[:, :width], att[:, :width], keep[:, :width]
        a_t = site_activations(teacher, layers[0], ids, att)[keep.to(teacher.device)]
        a_s = site_activations(student, layers[1], ids, att)[keep.to(student.device)]
        where = keep.nonzero()
        where[:, 0] += start
        parts.append((a_t, a_s, where))
        held += len(where)
        if held >= chunk_tokens:
            yield Chunk(*(torch.cat(p) for p in zip(*parts)))
            parts, held = [], 0
    if parts:
        yield Chunk(*(torch.cat(p) for p in zip(*parts)))


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


def match_student_layer(teacher: LoadedModel, student: LoadedModel, teacher_layer: int, rows: Rows,
                        max_tokens: int = 1500, seed: int = 0) -> tuple[int, list[float]]:
    """The student block whose output has the highest debiased linear CKA with the teacher's site, over tokens
    (the layer-CKA of ``analysis.pair.layer_cka``, on corpus tokens instead of read positions)."""
    n_rows = max(1, min(len(rows), max_tokens // max(1, rows.input_ids.shape[1] // 2)))
    ids, att = rows.input_ids[:n_rows], rows.attention_mask[:n_rows]
    keep = rows.token_mask()[:n_rows]
    x = site_activations(teacher, teacher_layer, ids, att)[keep.to(teacher.device)]
    pick = torch.from_numpy(np.random.default_rng(seed).permutation(len(x))[:max_tokens])
    xs = x[pick.to(x.device)].double().cpu().numpy()
    scores = [float(linear_cka(xs, y[keep.to(y.device)][pick.to(y.device)].double().cpu().numpy()))
              for y in all_block_outputs(student, ids, att)]
    return int(np.argmax(scores)), scores
