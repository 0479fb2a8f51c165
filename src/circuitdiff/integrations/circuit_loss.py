"""``CircuitLoss``: the lab's circuit-preserving term as a ``torch.nn.Module`` for any training loop.

    circuit = CircuitLoss(teacher, student, tokenizer, ["ioi"])
    term, out = circuit(**batch, return_outputs=True)   # the student's forward, recorded
    loss = out.loss + 0.5 * term

The pairs are chosen as ``circuitdiff lab distil --alpha-circuit`` chooses them
(``lab.circuit_loss.find_targets``: circuitdiff's comparison of the teacher with the student
as given, every student component with at least ``min_share`` of a task's influence held to
the teacher component it matches); the term for a batch is ``lab.circuit_loss.circuit_loss``:
the mean over pairs of 1 - linear CKA between the two components' outputs at the batch's
real tokens, the teacher's side without gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from circuitdiff.lab.circuit_loss import CircuitPair, circuit_loss, find_targets, recording
from circuitdiff.lab.errors import LabError


class CircuitLoss(torch.nn.Module):
    """Keep the student's task-carrying components computing what their matched teacher components compute.

    Args:
        teacher: the teacher, a Hugging Face model (not changed: the pairs are chosen on copies).
        student: the student being trained (the same object the loop updates).
        tokenizer: the tokenizer both models read (the lab's teacher and student share one).
        tasks: built-in task names or JSONL task files that decide which components carry the tasks.
        n_prompts: prompts per task for choosing the pairs.
        min_share: a student component joins when it carries at least this share of a task's influence.
        seed: task generation and the comparison's seed.
        pairs: the pairs to hold together, instead of choosing them (e.g. ``circuit_targets.json``'s).

    The module holds no parameters of its own; the models are referenced, not registered, so
    ``circuit.to(...)``, ``circuit.parameters()`` and a ``state_dict`` never include them.
    """

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module, tokenizer: Any,
                 tasks: Sequence[str] = ("ioi",), *, n_prompts: int = 32, min_share: float = 0.05, seed: int = 0,
                 pairs: Sequence[CircuitPair] | None = None) -> None:
        super().__init__()
        if pairs is None:
            pairs = find_targets(teacher, student, tokenizer, list(tasks), n_prompts=n_prompts, min_share=min_share,
                                 step=0, seed=seed).pairs
            if not pairs:
                raise LabError(f"no student component carries {min_share:.0%} of any task's influence; lower min_share")
        self.pairs: tuple[CircuitPair, ...] = tuple(pairs)
        self._models = (teacher, student)

    @property
    def teacher(self) -> torch.nn.Module:
        return self._models[0]

    @property
    def student(self) -> torch.nn.Module:
        return self._models[1]

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, *, return_outputs: bool = False,
                **student_inputs: Any) -> Tensor | tuple[Tensor, Any]:
        """The term for a batch; with ``return_outputs`` also the student's outputs of the same forward.

        ``student_inputs`` (e.g. ``labels``) go to the student only, so ``outputs.loss`` is its
        usual loss and the student runs once per step.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with recording(self.teacher, keep_grad=False) as t_rec, torch.no_grad():
            self.teacher(input_ids=input_ids, attention_mask=attention_mask)
        with recording(self.student, keep_grad=True) as s_rec:
            outputs = self.student(input_ids=input_ids, attention_mask=attention_mask, **student_inputs)
        term = circuit_loss(s_rec, t_rec, self.pairs, attention_mask)
        return (term, outputs) if return_outputs else term

    def extra_repr(self) -> str:
        return ", ".join(f"{p.student}->{p.teacher}" for p in self.pairs)
