"""Circuit-preserving distillation: keep the student's task-carrying components like their teacher matches.

The loss (after Wadhwa, Amir and Wallace, "Circuit Distillation", 2025) is the mean over
matched pairs of ``1 - linear CKA`` between the student component's output and its matched
teacher component's output, over the real tokens of the training batch. Which student
components carry the tasks, and which teacher component each one matches, come from
circuitdiff's own comparison of the teacher with the (initial, or current) student: the
same matching and influence a user reads in the report, not a second definition.

Outputs are read with forward hooks on the real modules (``interventions.hooks``): a head's
output is its slice of the input to the attention output projection, an MLP's its output.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuitdiff.interventions.hooks import Recording, hooked
from circuitdiff.lab.errors import LabError
from circuitdiff.models.adapters import adapter_for
from circuitdiff.models.components import Component

CKA_EPS = 1e-12


def linear_cka(x: Tensor, y: Tensor) -> Tensor:
    """Linear CKA between ``x`` (n, d1) and ``y`` (n, d2) rows of the same n examples, differentiable.

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` on column-centred float32 copies
    (Kornblith et al. 2019): invariant to rotations and isotropic scaling of either side,
    so the student may keep the teacher's computation in its own basis.
    """
    x = x.float() - x.float().mean(0, keepdim=True)
    y = y.float() - y.float().mean(0, keepdim=True)
    cross = (y.T @ x).square().sum()
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return cross / norm.clamp_min(CKA_EPS)


@dataclass(frozen=True)
class CircuitPair:
    """One task-carrying student component and the teacher component it matches."""

    student: str
    teacher: str
    share: float
    """The student component's largest share of influence over the analysed tasks."""
    similarity: float
    task: str


@dataclass(frozen=True)
class CircuitTargets:
    """The pairs the loss holds together, and when (at which step) they were chosen."""

    step: int
    pairs: tuple[CircuitPair, ...]
    seconds: float = 0.0
    """Wall time of the analysis that chose them (part of the run's training cost)."""

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "seconds": round(self.seconds, 2), "pairs": [asdict(p) for p in self.pairs]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CircuitTargets:
        return cls(int(d["step"]), tuple(CircuitPair(**p) for p in d["pairs"]), float(d.get("seconds", 0.0)))


def select_pairs(analyses: dict[str, Any], student_effects: dict[str, Sequence[Any]], min_share: float
                 ) -> tuple[CircuitPair, ...]:
    """Student components with at least ``min_share`` of a task's influence, each with its matched
    teacher component on the task where it matters most (components that carry no task are left free)."""
    best: dict[str, CircuitPair] = {}
    for task, analysis in analyses.items():
        matched = {m.student: m for m in analysis.matching}
        for effect in student_effects[task]:
            match = matched.get(effect.name)
            if match is None or effect.share < min_share:
                continue
            if effect.name not in best or effect.share > best[effect.name].share:
                best[effect.name] = CircuitPair(effect.name, match.teacher, float(effect.share),
                                                float(match.similarity), task)
    return tuple(sorted(best.values(), key=lambda p: _order(Component.parse(p.student))))


def _order(c: Component) -> tuple[int, int]:
    """Layer order, heads before the layer's MLP (as ``all_components`` lists them)."""
    return c.layer, c.head if c.head is not None else 1 << 30


def teacher_copy(teacher: torch.nn.Module, tokenizer: Any) -> Any:
    """The frozen teacher as circuitdiff analyses it: a copy, so the training model keeps its kernel and mode."""
    from circuitdiff.models.loading import from_hugging_face

    return from_hugging_face(copy.deepcopy(teacher), tokenizer, name="teacher")


def find_targets(teacher: torch.nn.Module, student: torch.nn.Module, tokenizer: Any, tasks: Sequence[str], *,
                 n_prompts: int, min_share: float, step: int, seed: int = 0, shared: Any = None) -> CircuitTargets:
    """Run circuitdiff's comparison on copies of both models (the originals keep training mode,
    gradients and attention kernel) and pick the pairs the loss will hold together.

    ``shared``: a ``SharedRuns`` of ``teacher_copy(teacher)``; the frozen teacher's runs are then
    computed at the first choice and reused at every refresh.
    """
    from circuitdiff.compare import run_comparison
    from circuitdiff.models.loading import from_hugging_face
    from circuitdiff.options import MIN_BOOT, CompareOptions

    start = time.perf_counter()
    options = CompareOptions(n_prompts=n_prompts, seed=seed, circuits=False, null_model=False, n_boot=MIN_BOOT)
    t_lm = shared.teacher if shared is not None else teacher_copy(teacher, tokenizer)
    s_lm = from_hugging_face(copy.deepcopy(student), tokenizer, name="student")
    with torch.enable_grad():  # attribution checks inside the pipeline may need autograd
        result = run_comparison(t_lm, s_lm, list(tasks), options, shared=shared)
    effects = {task: runs[1].effects for task, runs in result.runs.items()}
    return CircuitTargets(step, select_pairs(result.analyses, effects, min_share), time.perf_counter() - start)


@contextmanager
def recording(model: torch.nn.Module, keep_grad: bool) -> Iterator[Recording]:
    """Every head's and MLP's output during the forward passes inside the block."""
    with hooked(adapter_for(model), record=True, keep_grad=keep_grad) as rec:
        yield rec


def circuit_loss(student_rec: Recording, teacher_rec: Recording, pairs: Sequence[CircuitPair],
                 attention_mask: Tensor) -> Tensor:
    """Mean over ``pairs`` of 1 - linear CKA between the two components' outputs at the batch's real tokens."""
    if not pairs:
        raise ValueError("no component pairs to hold together")
    keep = attention_mask.bool()
    terms = []
    for pair in pairs:
        s = student_rec.get(Component.parse(pair.student))[keep]
        t = teacher_rec.get(Component.parse(pair.teacher))[keep]
        terms.append(1.0 - linear_cka(s, t.detach()))
    return torch.stack(terms).mean()


TARGETS_FILE = "circuit_targets.json"
"""In a run's folder: every choice of pairs so far, so a resumed run keeps them and the card lists them."""


class CircuitTerm:
    """The circuit loss of one distillation run: its pairs, re-chosen every ``refresh`` steps.

    The history of choices is written to ``TARGETS_FILE`` whenever it changes, so a run
    resumed from a checkpoint holds the same pairs as the uninterrupted run would.
    """

    def __init__(self, teacher: torch.nn.Module, tokenizer: Any, tasks: Sequence[str], *, refresh: int,
                 n_prompts: int, min_share: float, run_dir: Any) -> None:
        self.teacher, self.tokenizer, self.tasks = teacher, tokenizer, tuple(tasks)
        self.refresh, self.n_prompts, self.min_share = refresh, n_prompts, min_share
        self.path = Path(run_dir) / TARGETS_FILE
        saved = json.loads(self.path.read_text()) if self.path.is_file() else []
        self.history: list[CircuitTargets] = [CircuitTargets.from_json(d) for d in saved]
        self.shared: Any = None
        """With refreshes, the teacher's copy and its runs, kept from one choice to the next."""

    def _due(self, step: int) -> bool:
        if not self.history:
            return True
        last = self.history[-1].step
        return self.refresh > 0 and step > last and step % self.refresh == 0

    def pairs_at(self, student: torch.nn.Module, step: int) -> tuple[CircuitPair, ...]:
        """The pairs for ``step``: analysed afresh on the current student when a refresh is due."""
        if self._due(step):
            self.history = [h for h in self.history if h.step < step]
            if self.refresh > 0 and self.shared is None:
                from circuitdiff.shared_runs import SharedRuns

                self.shared = SharedRuns(teacher_copy(self.teacher, self.tokenizer))
            targets = find_targets(self.teacher, student, self.tokenizer, self.tasks, n_prompts=self.n_prompts,
                                   min_share=self.min_share, step=step, shared=self.shared)
            if not targets.pairs:
                raise LabError(f"no student component carries {self.min_share:.0%} of any task's influence at "
                                 f"step {step}; lower circuit_min_share (--circuit-min-share)")
            self.history.append(targets)
            self.path.write_text(json.dumps([h.to_json() for h in self.history], indent=1) + "\n")
        return self.history[-1].pairs

    def summary(self) -> dict[str, Any]:
        """For the model card: when the pairs were chosen and which they were."""
        return {"tasks": list(self.tasks), "refresh": self.refresh, "choices": [h.to_json() for h in self.history]}
