"""Analyses 3 and 4 of the study for one task: attention of the heads that matter, and the MLPs compared.

Plain data in (two ``ModelTaskRun``s and the matching), typed records out (``schema``).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict

import numpy as np

from circuitdiff.analysis._arrays import DegenerateRepresentationWarning, SmallSampleWarning
from circuitdiff.analysis.attention_roles import attention_by_role
from circuitdiff.analysis.bootstrap import bootstrap_ci
from circuitdiff.analysis.matching import Match
from circuitdiff.analysis.mlp_compare import heldout_cca_with_interval, heldout_principal_cosine
from circuitdiff.analysis.runs import ModelTaskRun
from circuitdiff.analysis.sparsity import NEAR_ZERO, hoyer, near_zero_fraction
from circuitdiff.analysis.tokenwise import tokenwise_cosine
from circuitdiff.schema import MLPRepresentation, MLPSparsity, Note, RoleAttention, Stat

TOP_HEADS = 5
MIN_SPLIT_PROMPTS = 8
"""Split-half CCA needs a few prompts per half."""
HELDOUT_BOOT = 200
"""Resamples of the scoring half behind the held-out SVCCA/PWCCA intervals (each one re-solves the
CCA projections' scores; 200 keeps the analysis under a second per pair; stated in README)."""


def head_shares(run: ModelTaskRun) -> dict[str, float]:
    """Each head's influence share (``ComponentEffect.share``: of all components' |effect|)."""
    return {e.name: float(e.share) for e in run.effects if e.head is not None}


def _layer_head(name: str) -> tuple[int, int]:
    layer, head = name[1:].split(".H")
    return int(layer), int(head)


def _stat(point: float, lo: float, hi: float, n: int) -> Stat:
    return Stat(point=point, lo=lo, hi=hi, level=0.95, n_valid=n)


def attention_roles(t: ModelTaskRun, s: ModelTaskRun, matching: list[Match], k: int = TOP_HEADS,
                    n_boot: int = 1000, seed: int = 0) -> list[RoleAttention]:
    """Top-k heads of each model by share, and their matched heads in the other model, by token role."""
    if t.attention_read is None or s.attention_read is None:
        return []
    t_to_s = {m.teacher: m.student for m in matching}
    s_to_t = {m.student: m.teacher for m in matching}
    shares = {"teacher": head_shares(t), "student": head_shares(s)}
    wanted: dict[tuple[str, str], str | None] = {}
    for role, other, lookup in (("teacher", "student", t_to_s), ("student", "teacher", s_to_t)):
        ranked = sorted(shares[role], key=lambda h: -shares[role][h])[:k]
        for head in ranked:
            partner = lookup.get(head)
            partner = partner if partner is not None and ".H" in partner else None
            wanted.setdefault((role, head), partner)
            if partner is not None:
                wanted.setdefault((other, partner), head)
    out: list[RoleAttention] = []
    for (role, head), partner in wanted.items():
        run = t if role == "teacher" else s
        layer, h = _layer_head(head)
        names = run.template_names or ("all",)
        tids = run.template_ids if run.template_ids is not None else np.zeros(run.attention_read.shape[1], int)
        roles = run.roles or {}
        for r in attention_by_role(run.attention_read[layer, :, h], roles, tids, names, n_boot, seed):
            out.append(RoleAttention(role_of_model=role, head=head, share=shares[role][head], counterpart=partner,
                                     **asdict(r)))
    return out


def _mlp_pairs(matching: list[Match]) -> list[tuple[int, int]]:
    """(teacher layer, student layer) of matched MLP pairs, by teacher layer."""
    pairs = [(int(m.teacher[1:].split(".")[0]), int(m.student[1:].split(".")[0]))
             for m in matching if m.teacher.endswith(".MLP") and m.student.endswith(".MLP")]
    return sorted(pairs)


def _tokenwise(t: ModelTaskRun, s: ModelTaskRun, lt: int, ls: int, n_boot: int, seed: int) -> Stat | None:
    if t.mlp_outputs is None or s.mlp_outputs is None or t.mlp_outputs.shape[1:] != s.mlp_outputs.shape[1:]:
        return None
    per_prompt = tokenwise_cosine(t.mlp_outputs[lt], s.mlp_outputs[ls], t.token_mask)
    per_prompt = per_prompt[np.isfinite(per_prompt)]
    if per_prompt.size == 0:
        return None
    return _stat(*bootstrap_ci(lambda idx: per_prompt[idx].mean(axis=-1), per_prompt.size, n_boot, seed,
                               vectorized=True), per_prompt.size)


def mlp_representation(t: ModelTaskRun, s: ModelTaskRun, matching: list[Match], same_tokens: bool,
                       n_boot: int = 1000, seed: int = 0) -> list[MLPRepresentation]:
    """Held-out SVCCA, PWCCA, principal-direction cosine and token-wise cosine of each matched MLP pair."""
    out: list[MLPRepresentation] = []
    for lt, ls in _mlp_pairs(matching):
        x, y = t.read_acts[f"L{lt}.MLP"], s.read_acts[f"L{ls}.MLP"]
        if x.shape[0] < MIN_SPLIT_PROMPTS:
            return []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateRepresentationWarning)
            warnings.simplefilter("ignore", SmallSampleWarning)
            sv, pw = heldout_cca_with_interval(x, y, seed=seed, n_boot=min(n_boot, HELDOUT_BOOT))
            cos = heldout_principal_cosine(x, y, seed=seed) if x.shape[1] == y.shape[1] else None
        n_score = x.shape[0] // 2
        out.append(MLPRepresentation(
            teacher=f"L{lt}.MLP", student=f"L{ls}.MLP",
            svcca=_stat(sv.value, sv.lo, sv.hi, n_score), pwcca=_stat(pw.value, pw.lo, pw.hi, n_score),
            principal_cosine=cos,
            tokenwise_cosine=_tokenwise(t, s, lt, ls, n_boot, seed) if same_tokens else None))
    return out


def mlp_sparsity(run: ModelTaskRun, role: str, n_boot: int = 1000, seed: int = 0) -> list[MLPSparsity]:
    """Near-zero share and Hoyer sparsity of each MLP's hidden units at the read position, with intervals."""
    if run.mlp_hidden_read is None:
        return []
    out = []
    for layer, hidden in enumerate(run.mlp_hidden_read):
        stats = []
        for values in (near_zero_fraction(hidden), hoyer(hidden)):
            v = values[np.isfinite(values)]
            stats.append(_stat(*bootstrap_ci(lambda idx, v=v: v[idx].mean(axis=-1), v.size, n_boot, seed,
                                             vectorized=True), v.size)
                         if v.size else Stat(point=None, lo=None, hi=None, level=0.95, n_valid=0))
        out.append(MLPSparsity(role_of_model=role, mlp=f"L{layer}.MLP", near_zero=stats[0], hoyer=stats[1],
                               threshold=NEAR_ZERO))
    return out


def representation_notes(t: ModelTaskRun, s: ModelTaskRun, matching: list[Match], same_tokens: bool) -> list[Note]:
    """Why a part of analyses 3 and 4 is missing, so that no empty section goes unexplained."""
    def note(code: str, text: str) -> Note:
        return Note(task=t.task, topic="representation", code=f"representation.{code}", text=text)

    notes = []
    if t.attention_read is None or s.attention_read is None:
        notes.append(note("no_attention", "no attention-by-role analysis: a model ran without eager attention"))
    pairs = _mlp_pairs(matching)
    if pairs and len(t.clean) < MIN_SPLIT_PROMPTS:
        notes.append(note("few_prompts", f"no MLP representation comparison: held-out CCA needs at least "
                                         f"{MIN_SPLIT_PROMPTS} prompts, the task has {len(t.clean)}"))
    elif pairs:
        if not same_tokens:
            notes.append(note("no_tokenwise", "no token-wise MLP cosine: the two models tokenise the prompts "
                                              "differently, so positions do not correspond"))
        if t.info.d_model != s.info.d_model:
            notes.append(note("no_principal_cosine", "no principal-direction cosine: the models' widths differ, "
                                                     "so MLP output directions live in different spaces"))
    return notes


def representation_records(t: ModelTaskRun, s: ModelTaskRun, matching: list[Match], same_tokens: bool,
                           n_boot: int = 1000, seed: int = 0) -> dict[str, list]:
    """All three record lists as results.json's task entry names them."""
    return {
        "attention_roles": attention_roles(t, s, matching, n_boot=n_boot, seed=seed),
        "mlp_representation": mlp_representation(t, s, matching, same_tokens, n_boot, seed),
        "mlp_sparsity": mlp_sparsity(t, "teacher", n_boot, seed) + mlp_sparsity(s, "student", n_boot, seed),
    }
