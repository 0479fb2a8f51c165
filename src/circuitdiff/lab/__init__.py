"""The distillation lab: train tiny teachers from scratch and distil students from them.

    from circuitdiff.lab import DataRecipe, DistillRecipe, TeacherRecipe, distil, train_teacher
    train_teacher(TeacherRecipe(kind="causal"), "out/teacher")
    distil("out/teacher", DistillRecipe(layers=(0, 2, 4), alpha_cos=0.0), "out/student")
    distil("smollm2-135m", DistillRecipe(data=DataRecipe(tasks=("successor",))), "out/smol")  # a real teacher

Students start from a subset of the teacher's layers (any family the adapters know; BERT
becomes DistilBERT) and learn from a weighted sum of a soft-target KL loss, the LM loss and
a hidden-state cosine loss, as DistilGPT2 and DistilBERT did. ``build_pairs`` rebuilds the pairs shipped in ``circuitdiff/pairs``.
"""

from __future__ import annotations

from circuitdiff.lab.build import BuildResult, distil, train_teacher
from circuitdiff.lab.corpus import load_corpus
from circuitdiff.lab.errors import CheckpointError, CorpusError, LabError
from circuitdiff.lab.evaluate import evaluate_tasks, logit_diffs
from circuitdiff.lab.losses import distillation_loss, hidden_cosine, soft_target_kl
from circuitdiff.lab.pairs import PAIRS_DIR, build_pairs, load_index
from circuitdiff.lab.recipe import ALL_TASKS, DataRecipe, DistillRecipe, OptimRecipe, TeacherRecipe
from circuitdiff.lab.student_init import default_layers, depth_pruned, init_student

__all__ = [
    "ALL_TASKS",
    "PAIRS_DIR",
    "BuildResult",
    "CheckpointError",
    "CorpusError",
    "DataRecipe",
    "DistillRecipe",
    "LabError",
    "OptimRecipe",
    "TeacherRecipe",
    "build_pairs",
    "default_layers",
    "depth_pruned",
    "distil",
    "distillation_loss",
    "evaluate_tasks",
    "hidden_cosine",
    "init_student",
    "load_corpus",
    "load_index",
    "logit_diffs",
    "soft_target_kl",
    "train_teacher",
]
