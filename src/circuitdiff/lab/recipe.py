"""Recipes: every knob of teacher training and distillation, as plain dataclasses.

They are saved with each checkpoint (so a resume can refuse a changed recipe) and written
into the model card, so two students distilled with different recipes can be compared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from circuitdiff.lab.errors import LabError
from circuitdiff.schema import json_ready

Kind = Literal["causal", "masked"]
ALL_TASKS: tuple[str, ...] = (
    "ioi", "numerals", "numerals-words", "numerals-months", "greater-than", "successor", "induction", "facts",
)
DEFAULT_TASK_PROMPTS: tuple[tuple[str, int], ...] = (
    ("ioi", 12000), ("induction", 6000), ("numerals", 4000), ("greater-than", 2000), ("facts", 6000),
)


@dataclass(frozen=True)
class DataRecipe:
    """What the model reads: corpus chunks mixed with task prompts (prompt + answer)."""

    corpus: str = "sample"
    """"sample" (shipped Pride and Prejudice), "janeaustenr", or a .txt file / folder."""
    tasks: tuple[str, ...] = ALL_TASKS
    task_prompts_per_task: int = 1500
    """Training prompts per task, from ``training_prompts`` (a seed stream evaluation never uses)."""
    task_prompts: tuple[tuple[str, int], ...] = DEFAULT_TASK_PROMPTS
    """Per-task overrides of ``task_prompts_per_task``: IOI and induction need copying circuits,
    which form only when their prompts are a large share of the data; facts must be memorised
    (about 24 showings of each of its 249 facts: a 600-step teacher knew 98% of them, 62% with
    1500 prompts); the rest learn fast."""
    chunk_tokens: int = 24
    """Corpus paragraphs are cut into chunks of at most this many tokens, one chunk per row."""
    corpus_max_chunks: int | None = None
    mlm_probability: float = 0.15
    """Masked LM only: share of ordinary tokens masked (80% [MASK], 10% random, 10% kept);
    the answer slot of a task prompt is always masked."""
    answer_weight: float = 5.0
    """LM-loss weight of each of a task prompt's answer tokens (all of them when the answer takes several)
    relative to every other token."""
    repeat_fraction: float = 0.5
    """Share of corpus chunks shown as "half-chunk + the same again" (grows induction heads)."""

    def prompts_for(self, task: str) -> int:
        """How many training prompts ``task`` gets."""
        return dict(self.task_prompts).get(task, self.task_prompts_per_task)


@dataclass(frozen=True)
class OptimRecipe:
    """AdamW with linear warm-up and cosine decay; the step count is the training length."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    save_every: int = 250
    """Steps between resumable checkpoints (always also at the end)."""


@dataclass(frozen=True)
class TeacherRecipe:
    """A teacher trained from scratch: GPT-2 (causal) or BERT (masked) plus its tokenizer."""

    kind: Kind = "causal"
    n_layers: int = 6
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    context: int = 64
    vocab_size: int = 3000
    dropout: float = 0.0
    seed: int = 0
    data: DataRecipe = field(default_factory=DataRecipe)
    optim: OptimRecipe = field(default_factory=OptimRecipe)

    def __post_init__(self) -> None:
        check_kind(self.kind)
        if self.d_model % self.n_heads:
            raise LabError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        check_positive(n_layers=self.n_layers, d_model=self.d_model, context=self.context,
                       vocab_size=self.vocab_size, steps=self.optim.steps, batch_size=self.optim.batch_size)


@dataclass(frozen=True)
class DistillRecipe:
    """DistilBERT/DistilGPT2 style: loss = alpha_kl*KL(T) + alpha_lm*LM + alpha_cos*cosine.

    Defaults follow the Hugging Face distillation scripts (alpha_ce=5, alpha_mlm/clm=2,
    alpha_cos=1, temperature 2). KL is scaled by T^2 so its gradient size does not depend on T.
    """

    layers: tuple[int, ...] | None = None
    """Teacher layers that seed the student, in order; None = every other layer from 0."""
    alpha_kl: float = 5.0
    alpha_lm: float = 2.0
    alpha_cos: float = 1.0
    temperature: float = 2.0
    kl_on_masked_only: bool = True
    """Masked LM: soft targets only where tokens are masked (as DistilBERT); causal: every token."""
    seed: int = 0
    data: DataRecipe = field(default_factory=DataRecipe)
    optim: OptimRecipe = field(default_factory=lambda: OptimRecipe(steps=1500, lr=5e-4))
    alpha_circuit: float = 0.0
    """Weight of the circuit loss: mean 1 - linear CKA between task-carrying student components
    and their matched teacher components (``lab.circuit_loss``); 0 switches it off."""
    circuit_refresh: int = 0
    """Steps between re-running the analysis that picks the pairs (0: only on the initial student)."""
    circuit_tasks: tuple[str, ...] = ("ioi", "numerals", "successor")
    """Tasks whose influence and matching pick the pairs."""
    circuit_prompts: int = 32
    circuit_min_share: float = 0.05
    """A student component carries a task when it has at least this share of the task's influence."""

    def __post_init__(self) -> None:
        if self.alpha_circuit < 0 or self.circuit_refresh < 0 or not 0 <= self.circuit_min_share < 1:
            raise LabError(f"alpha_circuit and circuit_refresh must be >= 0 and circuit_min_share in [0, 1), got "
                           f"{self.alpha_circuit}, {self.circuit_refresh}, {self.circuit_min_share}")
        if self.alpha_circuit > 0 and not self.circuit_tasks:
            raise LabError("the circuit loss needs at least one task (circuit_tasks) to pick its components")
        if self.temperature <= 0:
            raise LabError(f"temperature must be positive, got {self.temperature}")
        weights = (self.alpha_kl, self.alpha_lm, self.alpha_cos)
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise LabError(f"loss weights must be >= 0 and not all 0, got {weights}")
        check_positive(steps=self.optim.steps, batch_size=self.optim.batch_size)


def check_kind(kind: str) -> None:
    if kind not in ("causal", "masked"):
        raise LabError(f"kind must be 'causal' or 'masked', got {kind!r}")


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise LabError(f"{name} must be positive, got {value}")


def to_dict(recipe: Any) -> dict[str, Any]:
    """JSON-ready dict (tuples become lists)."""
    return json_ready(dataclasses.asdict(recipe))


def distill_from_dict(d: dict[str, Any]) -> DistillRecipe:
    """Inverse of ``to_dict`` for a distillation recipe."""
    layers = None if d.get("layers") is None else tuple(d["layers"])
    if "circuit_tasks" in d:
        d = {**d, "circuit_tasks": tuple(d["circuit_tasks"])}
    return DistillRecipe(**{**d, "layers": layers, "data": _data(d["data"]), "optim": OptimRecipe(**d["optim"])})


def _data(d: dict[str, Any]) -> DataRecipe:
    pairs = tuple((str(k), int(v)) for k, v in d.get("task_prompts", ()))
    return DataRecipe(**{**d, "tasks": tuple(d["tasks"]), "task_prompts": pairs})
