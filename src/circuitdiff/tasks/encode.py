"""Tokenise a task for one model: padded ids, where to read logits, answer/distractor ids.

Teacher and student may use different tokenizers, so each encodes the same ``Task``
itself. Single-token answers are checked the robust way, by tokenising the prompt with
and without the answer and comparing, instead of tokenising the answer alone (which gets
leading spaces, merges and special tokens wrong for many tokenizers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from circuitdiff.errors import TaskEncodingError
from circuitdiff.tasks.base import MASK, Task

if TYPE_CHECKING:  # transformers is heavy to import; any tokenizer-like object works
    from transformers import PreTrainedTokenizerBase

MAX_REPORTED = 5


@dataclass(frozen=True)
class EncodedTask:
    """A task as tensors for one tokenizer; rows are prompts, right-padded to one width.

    Clean and corrupted inputs share the width ``s`` so activations line up position by
    position. ``read_pos`` is where the metric reads logits: the last real token of a
    causal prompt, or the mask token of a masked one.
    """

    input_ids: Tensor  # (n, s) long
    attention_mask: Tensor  # (n, s) long, 1 = real token
    read_pos: Tensor  # (n,) long
    answer_ids: Tensor  # (n,) long
    distractor_ids: Tensor  # (n,) long
    corrupted_input_ids: Tensor | None = None  # (n, s) or None
    corrupted_attention_mask: Tensor | None = None
    corrupted_read_pos: Tensor | None = None  # (n,)
    prompt_index: Tensor | None = None  # (n,) row -> index into task.prompts (kept by subset)
    template_ids: Tensor | None = None  # (n,) long: row -> index into template_names
    template_names: tuple[str, ...] = ()
    """Template groups: prompts of one template (``TaskPrompt.template``) and one clean token
    length; without a template, equal length alone. Mean and resample ablation stay inside a group."""
    task_name: str = ""
    masked: bool = False
    answer_tokens: Tensor | None = None  # (n, a) long, -1 padded: the answer continuation (multi-token tasks)
    distractor_tokens: Tensor | None = None  # (n, d) long, -1 padded
    distractor_input_ids: Tensor | None = None  # (n, s): prompt + distractor[:-1] (the distractor branch)
    distractor_attention_mask: Tensor | None = None
    corrupted_distractor_input_ids: Tensor | None = None  # (n, s): corrupted prompt + distractor[:-1]
    corrupted_distractor_attention_mask: Tensor | None = None
    """Multi-token tasks (any answer or distractor of several tokens for this tokenizer): ``input_ids``
    hold the prompt followed by the answer's tokens but the last (the answer branch), the distractor
    fields the prompt followed by the distractor's (the distractor branch); both are teacher-forced and
    scored from ``read_pos`` on (``interventions.readout``). None for one-token tasks, whose rows are
    the prompts alone and whose metric is the logit difference at ``read_pos``, as before."""

    @property
    def n(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def branches(self) -> int:
        """1 for a one-token task (one row per prompt), 2 for a multi-token one (answer and distractor rows)."""
        return 1 if self.answer_tokens is None else 2

    def continuation(self, row: int, role: str = "answer") -> Tensor:
        """Row ``row``'s answer (or ``role="distractor"``) tokens: one for a one-token encoding."""
        table = self.answer_tokens if role == "answer" else self.distractor_tokens
        if table is None:
            return (self.answer_ids if role == "answer" else self.distractor_ids)[row:row + 1]
        return table[row][table[row] >= 0]

    @property
    def has_corrupted(self) -> bool:
        return self.corrupted_input_ids is not None

    @property
    def aligned(self) -> bool:
        """Clean and corrupted prompts have equal token counts and read positions, row by row
        (what position-wise patching and per-position mean ablation need)."""
        if self.corrupted_attention_mask is None or self.corrupted_read_pos is None:
            return False
        same_len = torch.equal(self.attention_mask.sum(1), self.corrupted_attention_mask.sum(1))
        return same_len and torch.equal(self.read_pos, self.corrupted_read_pos)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> EncodedTask:
        """Apply ``fn`` to every tensor field (None fields stay None)."""
        changes: dict[str, Any] = {f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), Tensor)}
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> EncodedTask:
        """A copy with every tensor on ``device``."""
        return self._map(lambda t: t.to(device))


def tokenizer_label(tokenizer: PreTrainedTokenizerBase) -> str:
    """Short name for messages: the checkpoint folder or hub id, else the class name."""
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    return Path(name).name if name else type(tokenizer).__name__


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The pad id: pad token, else eos (GPT-2 has no pad token), else 0; masked out anyway."""
    for tid in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(tid, int):
            return tid
    return 0


def _fill_mask(prompt: str, text: str) -> str:
    """Put ``text`` in the MASK slot; an answer's leading space is dropped after a space."""
    i = prompt.index(MASK)
    if i == 0 or prompt[i - 1].isspace():
        text = text.lstrip()
    return prompt[:i] + text + prompt[i + len(MASK):]


class _Problems:
    """Problems grouped by kind, then by offending text, each with the prompts it hits.

    Raised as one line, e.g. ``task 'my.jsonl': answer is not a single token for tokenizer
    'gpt2': ' Marybeth' (lines 3, 7), ' Xavier' (line 9)``.
    """

    def __init__(self, task: Task) -> None:
        self.task = task
        self.groups: dict[str, dict[str | None, list[int]]] = {}

    def add(self, kind: str, index: int, detail: str | None = None) -> None:
        self.groups.setdefault(kind, {}).setdefault(detail, []).append(index)

    def _where(self, idx: list[int]) -> str:
        lines = self.task.source_lines
        nums = [str(lines[i]) for i in idx] if lines else [f"#{i}" for i in idx]
        word = ("line" if lines else "prompt") + ("s" if len(nums) > 1 else "")
        return f"{word} {_first(nums)}"

    def _render(self, kind: str, details: dict[str | None, list[int]]) -> str:
        if list(details) == [None]:
            return f"{kind} ({self._where(details[None])})"
        items = [f"{d!r} ({self._where(idx)})" for d, idx in details.items()]
        return f"{kind}: {_first(items)}"

    def message(self) -> str | None:
        if not self.groups:
            return None
        return f"task '{self.task.name}': " + "; ".join(self._render(kind, d) for kind, d in self.groups.items())

    def raise_if_any(self) -> None:
        message = self.message()
        if message is not None:
            raise TaskEncodingError(message)


def _first(items: list[str]) -> str:
    """The first few items, comma-separated, with a count of the rest."""
    more = f" and {len(items) - MAX_REPORTED} more" if len(items) > MAX_REPORTED else ""
    return ", ".join(items[:MAX_REPORTED]) + more


def _ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids with the tokenizer's default special tokens ([CLS]/[SEP], BOS, ...)."""
    return [list(ids) for ids in tokenizer(texts)["input_ids"]] if texts else []


def template_groups(templates: Sequence[str | None], lengths: Sequence[int]) -> tuple[Tensor, tuple[str, ...]]:
    """Group rows by (template, token length): positions line up only within a group.

    A template whose prompts tokenise to several lengths is split, and its groups are
    named with their length; rows without a template are grouped by length alone.
    """
    keys = list(zip(templates, lengths, strict=True))
    order = list(dict.fromkeys(keys))
    lengths_of: dict[str | None, int] = {}
    for template, _ in order:
        lengths_of[template] = lengths_of.get(template, 0) + 1

    def name(template: str | None, length: int) -> str:
        if template is None:
            return f"{length} tokens"
        return template if lengths_of[template] == 1 else f"{template} ({length} tokens)"

    index = {key: i for i, key in enumerate(order)}
    return torch.tensor([index[k] for k in keys], dtype=torch.long), tuple(name(*k) for k in order)


Slots = list[tuple[list[int], list[int]] | str]
"""Per prompt: the ids before and after the answer slot, or why it has none."""


def _slot(ids: list[int], masked: bool, mask_id: int | None,
          special: Collection[int]) -> tuple[list[int], list[int]] | str:
    """Split prompt ids around the answer slot: (before, after), or why there is no slot.

    Causal: the slot follows the last real token (trailing specials like [SEP] stay after).
    Masked: the slot is the single mask token, which is dropped.
    """
    if masked:
        assert mask_id is not None
        count = ids.count(mask_id)
        if count != 1:
            return f"prompt has {count} mask tokens after tokenisation, expected 1"
        p = ids.index(mask_id)
        return ids[:p], ids[p + 1:]
    p = len(ids)
    while p > 0 and ids[p - 1] in special:
        p -= 1
    if p == 0:
        return "prompt has no tokens"
    return ids[:p], ids[p:]


def _answer_tokens(filled: list[int], before: list[int], after: list[int]) -> list[int] | None:
    """The ids the answer added between ``before`` and ``after``; None if it merged with them."""
    k = len(filled) - len(before) - len(after)
    if k < 1 or filled[:len(before)] != before or filled[len(filled) - len(after):] != after:
        return None
    return filled[len(before):len(before) + k]


@dataclass(frozen=True)
class _Texts:
    """How one tokenizer reads a task's texts: the mask slot, special ids, where to read."""

    task: Task
    tokenizer: Any
    mask_id: int | None
    special: frozenset[int]

    def as_input(self, text: str) -> str:
        return text.replace(MASK, self.tokenizer.mask_token) if self.task.masked else text

    def filled(self, prompt: str, text: str) -> str:
        return _fill_mask(prompt, text) if self.task.masked else prompt + text

    def read_at(self, before: list[int]) -> int:
        return len(before) if self.task.masked else len(before) - 1

    def slot(self, ids: list[int]) -> tuple[list[int], list[int]] | str:
        return _slot(ids, self.task.masked, self.mask_id, self.special)


def _texts(task: Task, tokenizer: PreTrainedTokenizerBase) -> _Texts:
    """Check what every encoding needs (prompts, a mask token, one {mask} per prompt)."""
    label = tokenizer_label(tokenizer)
    if not task.prompts:
        raise TaskEncodingError(f"task '{task.name}' has no prompts")
    mask_id = None
    if task.masked:
        mask_token = getattr(tokenizer, "mask_token", None)
        mask_id = getattr(tokenizer, "mask_token_id", None)
        if not mask_token or mask_id is None:
            raise TaskEncodingError(
                f"task '{task.name}' is masked ({MASK} prompts) but tokenizer '{label}' has no mask "
                "token; use a masked LM or a causal task")
        problems = _Problems(task)
        for i, p in enumerate(task.prompts):
            texts = [p.prompt] + ([p.corrupted_prompt] if p.corrupted_prompt is not None else [])
            if any(t.count(MASK) != 1 for t in texts):
                problems.add(f"masked prompt needs exactly one {MASK}", i)
        problems.raise_if_any()
    special = frozenset(getattr(tokenizer, "all_special_ids", []) or [])
    return _Texts(task, tokenizer, mask_id, special)


def _target_tokens(texts: _Texts, slots: Slots) -> dict[str, list[list[int] | None]]:
    """Per role (answer, distractor) and prompt: the ids the text adds in the slot; None where
    it merges with the prompt or the prompt has no slot."""
    prompts = texts.task.prompts
    out: dict[str, list[list[int] | None]] = {}
    for role in ("answer", "distractor"):
        filled = [texts.filled(p.prompt, getattr(p, role)) for p in prompts]
        out[role] = [None if isinstance(sl, str) else _answer_tokens(ids, *sl)
                     for ids, sl in zip(_ids(texts.tokenizer, filled), slots, strict=True)]
    return out


def _clean_slots(texts: _Texts) -> tuple[list[list[int]], Slots]:
    clean = _ids(texts.tokenizer, [texts.as_input(p.prompt) for p in texts.task.prompts])
    return clean, [texts.slot(ids) for ids in clean]


def single_token_items(task: Task, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Indices of the prompts whose answer and distractor are each one token for ``tokenizer``."""
    texts = _texts(task, tokenizer)
    targets = _target_tokens(texts, _clean_slots(texts)[1])
    return [i for i in range(len(task.prompts)) if all(len(t[i] or ()) == 1 for t in targets.values())]


def drop_multi_token_items(tasks: Sequence[Task],
                           tokenizers: Sequence[PreTrainedTokenizerBase]) -> tuple[list[Task], str | None]:
    """Keep the items every tokenizer can answer in one token, so that all models see the same items.

    ``tasks`` are one task as each model gets it (a causal and a masked variant hold the same
    items in the same order). Only tasks that allow it (``Task.drop_multi_token``) lose items;
    others are returned as they are, for ``encode_task`` to refuse by name. Returns the tasks
    and a warning that counts the dropped items per tokenizer (None when none were dropped).
    """
    if not tasks or not all(t.drop_multi_token for t in tasks):
        return list(tasks), None
    n, name = len(tasks[0]), tasks[0].name
    kept = [set(single_token_items(t, tok)) for t, tok in zip(tasks, tokenizers, strict=True)]
    keep = sorted(set.intersection(*kept))
    if len(keep) == n:
        return list(tasks), None
    per = dict.fromkeys(f"{n - len(k)} for tokenizer '{tokenizer_label(tok)}'" for k, tok in zip(kept, tokenizers))
    if not keep:
        raise TaskEncodingError(f"task '{name}': every item's answer or distractor is split by a tokenizer "
                                f"(of {n}: {', '.join(per)}); use --first-token to score first tokens")
    note = (f"{name}: dropped {n - len(keep)} of {n} items whose answer or distractor is not a single token "
            f"({', '.join(per)}); --first-token keeps them, scored by their first token")
    return [t.select(keep) for t in tasks], note


def _checked_targets(texts: _Texts, slots: Slots, problems: _Problems,
                     first_token: bool) -> dict[str, list[list[int]]]:
    """The answer and distractor tokens of every prompt with a slot; each bad one recorded in ``problems``.

    Causal tasks take answers of any length (teacher-forced, see ``EncodedTask``); ``first_token``
    cuts them to their first token. Masked tasks score one mask position, so a split answer is refused.
    """
    label = tokenizer_label(texts.tokenizer)
    targets: dict[str, list[list[int]]] = {"answer": [], "distractor": []}
    for role, tokens in _target_tokens(texts, slots).items():
        for i, (p, toks) in enumerate(zip(texts.task.prompts, tokens, strict=True)):
            if isinstance(slots[i], str):
                continue
            if not getattr(p, role).strip():
                problems.add(f"{role} is empty", i)
            elif toks is None:
                problems.add(f"{role} merges with the end of the prompt for tokenizer '{label}'", i, getattr(p, role))
            elif len(toks) != 1 and texts.task.masked and not first_token:
                problems.add(f"{role} is not a single token for tokenizer '{label}' (a masked LM scores one "
                             f"{MASK} position; multi-token answers need a causal LM, or --first-token)",
                             i, getattr(p, role))
            else:
                targets[role].append(toks[:1] if first_token else toks)
    for i, (a, d) in enumerate(zip(targets["answer"], targets["distractor"])):
        if a == d and not first_token:  # cut to first tokens, equal ones read zero (as in earlier releases)  # rows with a slot only, so i counts those; the message names the text
            problems.add(f"answer and distractor are the same tokens for tokenizer '{label}'",
                         _with_slot(slots)[i], texts.task.prompts[_with_slot(slots)[i]].answer)
    return targets


def _with_slot(slots: Slots) -> list[int]:
    return [i for i, sl in enumerate(slots) if not isinstance(sl, str)]


def _corrupted_reads(texts: _Texts, clean: list[list[int]], slots: Slots, problems: _Problems,
                     require_aligned: bool) -> tuple[list[list[int]], list[int]]:
    """Corrupted prompt ids and read positions; a prompt without a slot (or misaligned, if asked) is a problem."""
    label = tokenizer_label(texts.tokenizer)
    corrupted = _ids(texts.tokenizer, [texts.as_input(p.corrupted_prompt or "") for p in texts.task.prompts])
    read: list[int] = []
    for i, (ids, sl) in enumerate(zip(corrupted, slots, strict=True)):
        csl = texts.slot(ids)
        if isinstance(csl, str):
            problems.add("corrupted " + csl, i)
            continue
        read.append(texts.read_at(csl[0]))
        if require_aligned and not isinstance(sl, str) and (len(ids) != len(clean[i]) or len(csl[0]) != len(sl[0])):
            problems.add(f"corrupted prompt is not token-aligned with the clean one for tokenizer '{label}'", i)
    return corrupted, read


def _padded(rows: list[list[int]], width: int, pad: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids and their attention mask, (len(rows), width) each."""
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
        att[r, :len(row)] = 1
    return ids, att


def _continued(rows: list[list[int]], reads: list[int], tokens: list[list[int]]) -> list[list[int]]:
    """Each prompt up to its read position followed by its continuation but the last token (teacher forcing)."""
    return [ids[:r + 1] + toks[:-1] for ids, r, toks in zip(rows, reads, tokens, strict=True)]


def _token_table(tokens: list[list[int]]) -> Tensor:
    """(n, longest) long, right-padded with -1."""
    table = torch.full((len(tokens), max(len(t) for t in tokens)), -1, dtype=torch.long)
    for r, toks in enumerate(tokens):
        table[r, :len(toks)] = torch.tensor(toks, dtype=torch.long)
    return table


def encode_task(task: Task, tokenizer: PreTrainedTokenizerBase, *, first_token: bool = False,
                require_aligned: bool = False, max_length: int | None = None) -> EncodedTask:
    """Encode ``task`` for ``tokenizer`` or raise ``TaskEncodingError`` naming the bad items.

    Answers of several tokens make a multi-token encoding (``EncodedTask.branches`` 2); when every
    answer and distractor is one token the encoding is the one-token one of earlier releases.
    ``first_token``: score answers by their first token only (always one-token).
    ``require_aligned``: also refuse corrupted prompts whose token count differs from the clean one.
    ``max_length``: the model's context; a longer prompt plus continuation is refused.
    """
    problems = _Problems(task)
    texts = _texts(task, tokenizer)
    clean, slots = _clean_slots(texts)
    for i, sl in enumerate(slots):
        if isinstance(sl, str):
            problems.add(sl, i)
    targets = _checked_targets(texts, slots, problems, first_token)
    corrupted, c_read = _corrupted_reads(texts, clean, slots, problems, require_aligned) if task.has_corrupted \
        else (None, [])
    problems.raise_if_any()
    read = [texts.read_at(sl[0]) for sl in slots if not isinstance(sl, str)]
    multi = any(len(t) > 1 for role in targets.values() for t in role)
    branches: dict[str, list[list[int]]] = {}
    if multi:  # both branches, teacher-forced, clean and corrupted
        for role in ("answer", "distractor"):
            branches[role] = _continued(clean, read, targets[role])
            if corrupted is not None:
                branches["corrupted " + role] = _continued(corrupted, c_read, targets[role])
        clean, corrupted = branches["answer"], branches.get("corrupted answer")
    rows = clean + (corrupted or []) + [r for role, rs in branches.items() if "distractor" in role for r in rs]
    width = max(len(ids) for ids in rows)
    if max_length is not None and width > max_length:
        longest = max(range(len(rows)), key=lambda r: len(rows[r])) % len(task.prompts)
        problems.add(f"prompt plus continuation is longer than the model's context ({max_length} tokens)", longest)
        problems.raise_if_any()
    pad = pad_id(tokenizer)
    input_ids, attention_mask = _padded(clean, width, pad)
    c_ids, c_att = _padded(corrupted, width, pad) if corrupted is not None else (None, None)
    d_ids, d_att = _padded(branches["distractor"], width, pad) if multi else (None, None)
    cd_ids, cd_att = (_padded(branches["corrupted distractor"], width, pad) if multi and corrupted is not None
                      else (None, None))
    prompt_lengths = [r + 1 if not task.masked else len(ids) for r, ids in zip(read, clean)] if multi \
        else [len(ids) for ids in clean]
    template_ids, template_names = template_groups([p.template for p in task.prompts], prompt_lengths)
    return EncodedTask(
        input_ids=input_ids,
        attention_mask=attention_mask,
        read_pos=torch.tensor(read, dtype=torch.long),
        answer_ids=torch.tensor([t[0] for t in targets["answer"]], dtype=torch.long),
        distractor_ids=torch.tensor([t[0] for t in targets["distractor"]], dtype=torch.long),
        corrupted_input_ids=c_ids,
        corrupted_attention_mask=c_att,
        corrupted_read_pos=torch.tensor(c_read, dtype=torch.long) if corrupted is not None else None,
        prompt_index=torch.arange(len(task.prompts), dtype=torch.long),
        template_ids=template_ids,
        template_names=template_names,
        task_name=task.name,
        masked=task.masked,
        answer_tokens=_token_table(targets["answer"]) if multi else None,
        distractor_tokens=_token_table(targets["distractor"]) if multi else None,
        distractor_input_ids=d_ids,
        distractor_attention_mask=d_att,
        corrupted_distractor_input_ids=cd_ids,
        corrupted_distractor_attention_mask=cd_att,
    )


def refuse_multi_token(enc: EncodedTask, analysis: str) -> None:
    """Stop with one line where an analysis does not support multi-token answers yet."""
    if enc.branches > 1:
        raise TaskEncodingError(f"task '{enc.task_name}': {analysis} does not support multi-token answers yet "
                                "(an answer or distractor is several tokens for this tokenizer); "
                                "use --first-token to score first tokens")


def split_items(task: Task, enc: EncodedTask, tokenizer: PreTrainedTokenizerBase) -> str | None:
    """One line naming the items whose answer or distractor ``enc`` holds as several tokens (None if none)."""
    problems = _Problems(task)
    label = tokenizer_label(tokenizer)
    for role, table in (("answer", enc.answer_tokens), ("distractor", enc.distractor_tokens)):
        for i, count in enumerate([] if table is None else table.ge(0).sum(1).tolist()):
            if count > 1:
                problems.add(f"{role} is several tokens for tokenizer '{label}'", i, getattr(task.prompts[i], role))
    return problems.message()
