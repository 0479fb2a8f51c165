"""The report's sentences: computed from the numbers, so the words cannot disagree with them.

A direction ("fewer", "more") is claimed only when the two bootstrap intervals do not
overlap; otherwise the sentence says there is no clear difference. No finding at all is
claimed for a task that one of the models does not solve (``finding`` in results.json):
the section says which model and why instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from circuitdiff.report.data import Stat, concentration_stat, finite, fmt, null_reason, reason, similarity_label
from circuitdiff.schema import Agreement, Concentration, Finding, ModelTaskRecord, Results

GLOSSARY: list[tuple[str, str]] = [
    ("Influence (share of reliance)",
     "How much the task metric (logit of the right answer minus the wrong one) moves when one component is "
     "ablated, as a share of the total over all of the model's components; the shares of one model add up to 1."),
    ("Alignment score",
     "Optimal transport of the teacher's influence onto the student's, valued by CKA similarity: the teacher's "
     "reliance is moved onto the student's as well as possible, and the score is the average similarity of the "
     "component pairs it lands on (1: every unit lands on a component computing the same thing; 0: nothing similar)."),
    ("Null",
     "The same alignment score for several randomly initialised students of the student's architecture (10 by "
     "default, seeded): the median is the level a student reaches by chance. 'Above chance' means the score's "
     "interval lies wholly above the 95% quantile of those random students."),
    ("Paper A",
     "The reference study's alignment score, reproduced for comparison; with many components it is close to the "
     "mean best similarity and hardly responds to influence."),
    ("Effective number of components",
     "exp(entropy of the influence shares): how many equally important components the model's reliance is worth. "
     "Fewer means the task is carried by fewer components."),
    ("Gini of reliance",
     "0 when every component carries the same share, close to 1 when one component carries everything."),
    ("Top-k share / components for 80%",
     "Share carried by the k most influential components; fewest components that together carry 80% of the reliance."),
    ("Worst single drop",
     "The largest fall of the task metric caused by ablating one component, in percent of the clean metric "
     "(only when the clean metric is clearly positive). Under noising and denoising, drops are in percent of the "
     "clean − corrupted gap instead: the share of the gap lost when the component alone is corrupted, or restored "
     "when it alone is clean. 'Heads only' rows repeat the statistics over attention heads alone, as the reference "
     "study reports them."),
    ("Solved task",
     "Findings are claimed only for tasks both models solve: accuracy clearly above the 50% chance of choosing "
     "between answer and distractor (one-sided binomial test, p < 0.05) and a clearly positive clean metric "
     "(the logit difference, or the log-prob difference where an answer takes several tokens). For other tasks the numbers are listed but no finding is drawn from them."),
    ("Linear CKA",
     "Similarity (0 to 1) of two components' outputs across the prompts, insensitive to rotation and scale: "
     "1 means one output is a rotated, rescaled copy of the other."),
    ("Layer CKA",
     "The same similarity for the whole residual stream after each layer: which student layer holds what a "
     "teacher layer holds."),
    ("Matching",
     "Each student component paired with one teacher component of the same kind (head or MLP) so that the total "
     "CKA is as high as possible."),
    ("Circuit",
     "The components left after pruning, from the least to the most influential, every component whose removal "
     "(on top of those already removed) keeps the metric within a threshold share of the clean value. "
     "Faithfulness: metric with only the circuit kept, over clean (within the threshold of 1 by construction "
     "under the run's ablation; not under the other ablation type). Incompleteness (Wang et al. 2022): the largest "
     "gap, over sampled subsets K of the circuit, between removing K from the circuit and removing K from the "
     "whole model, as a share of clean (0: the circuit holds everything the model uses). The walk is greedy and "
     "path-dependent, so the circuits at different thresholds need not be nested: each is shown with its overlap "
     "with the others."),
    ("Estimate vs exact",
     "How well a one-pass estimate (attribution patching for components; EAP and EAP-IG for edges) agrees with the "
     "exact effects. 'all': Spearman rank correlation over every component or edge, dominated by the many with "
     "near-zero effect, whose order is noise; 'top k': the same over the k largest exact effects; 'weighted': "
     "Pearson correlation with each item weighted by its exact |effect|. A low 'all' beside high 'top k' and "
     "'weighted' means the estimate gets the components that matter right."),
    ("Intervals",
     "95% bootstrap intervals over prompts, bias-corrected and accelerated (BCa; a component's effect, a plain "
     "mean, gets the percentile interval): the range the number would "
     "take on other prompts of the same task. Where the point lies beyond 97.5% of the resamples no interval can "
     "contain it honestly, so none is shown and a note says why."),
]


@dataclass(frozen=True)
class Verdict:
    """Whether the student concentrates its reliance on fewer components than its teacher."""

    direction: str
    """'fewer', 'more', 'no clear difference', 'withheld' (a model does not solve the task), or 'not available'."""
    sentence: str
    detail: str


def _range(stat: Stat, spec: str = ".1f") -> str:
    return f"{fmt(stat.lo, spec)}–{fmt(stat.hi, spec)}" if stat.has_interval else "no interval"


def withheld_reason(finding: Finding | None) -> str | None:
    """Why no finding may be claimed (a model does not solve the task), or None."""
    if finding is not None and finding.claimed is False:
        return finding.reason or "a model does not solve the task"
    return None


def concentration_verdict(concentration: Concentration, finding: Finding | None, n_teacher: int,
                          n_student: int) -> Verdict:
    """The headline: effective numbers with intervals, direction decided by interval overlap.

    ``concentration`` and ``finding``: the task's ``TaskResult`` fields of those names.
    """
    why = withheld_reason(finding)
    if why is not None:
        return Verdict("withheld", f"No concentration finding: {why}.",
                       "The statistics are still listed; without a solved task they describe how the components "
                       "move the output, not how a model does the task.")
    t = concentration_stat(concentration, "teacher", "effective_number")
    s = concentration_stat(concentration, "student", "effective_number")
    if t is None or s is None:
        return Verdict("not available", "The effective number of components is not available for this task.", "")
    record = (concentration.get("student") or {}).get("effective_number")
    level = (record.level if record is not None else None) or 0.95
    if t.has_interval and s.has_interval:
        if s.hi < t.lo:
            direction, tail = "fewer", "it concentrates on fewer components."
        elif s.lo > t.hi:
            direction, tail = "more", "it spreads over more components."
        else:
            direction, tail = "no clear difference", "no clear difference (the intervals overlap)."
    else:
        direction, tail = "no clear difference", "no clear difference can be claimed without intervals."
    s_range = f"{level:.0%} CI {_range(s)}" if s.has_interval else "no interval"
    sentence = (f"The student spreads its reliance over {fmt(s.point, '.1f')} effective components "
                f"({s_range}) against the teacher's {fmt(t.point, '.1f')} ({_range(t)}): {tail}")
    detail = ""
    if n_teacher and n_student and t.point and s.point:
        detail = (f"Relative to size, that is {s.point / n_student:.0%} of the student's {n_student} components "
                  f"against {t.point / n_teacher:.0%} of the teacher's {n_teacher}.")
        gt, gs = concentration_stat(concentration, "teacher", "gini"), concentration_stat(concentration, "student", "gini")
        if gt is not None and gs is not None:
            detail += f" Gini of reliance: student {gs.text()}, teacher {gt.text()} (higher is more unequal)."
    return Verdict(direction, sentence, detail)


def alignment_sentences(results: Results, name: str) -> list[str]:
    """The alignment score, its interval and where it stands against the random-student null."""
    task = results.tasks[name]
    al = task.alignment
    score = finite(al.score)
    if score is None:
        return ["The alignment score is not available: "
                + reason(results, name, "finding", "metric", default="it was not computed for this task.")]
    lo, hi = (finite(al.ci[0]), finite(al.ci[1])) if len(al.ci) == 2 else (None, None)
    interval = f" ({al.level:.0%} CI {fmt(lo)}–{fmt(hi)})" if lo is not None and hi is not None else " (no interval)"
    out = [f"Alignment {fmt(score)}{interval}: on average, the teacher's reliance lands on student components "
           f"whose outputs have {similarity_label(al.measure)} similarity {fmt(score)} with the teacher components they replace."]
    null = finite(al.null)
    why = withheld_reason(task.finding)
    if why is not None:
        return [f"No alignment finding: {why}.",
                f"For the record, the score is {fmt(score)}{interval} and a random student scores {fmt(null)}; "
                "without a task both models solve, they do not show a shared mechanism."]
    if null is None:
        out.append(f"The random-student null is not available: {null_reason(results, name)}.")
        return out
    q95 = finite(al.null_q95)
    spread = f" (median of {al.n_null}; 95% of them score at most {fmt(q95)})" if q95 is not None else ""
    if al.above_chance is None:
        said = "no verdict (the interval is missing)"
    elif al.above_chance:
        said = "the student is above chance (its interval's lower bound exceeds that 95% level)"
    else:
        said = "the student is not shown to be above chance (its interval's lower bound does not exceed that 95% level)"
    out.append(f"Randomly initialised students of the same architecture score {fmt(null)}{spread}: {said}.")
    return out


def overall_finding(verdicts: dict[str, Verdict]) -> str:
    """One sentence over all tasks answering the reference study's main question."""
    counts: dict[str, list[str]] = {}
    for task, v in verdicts.items():
        counts.setdefault(v.direction, []).append(task)
    if not verdicts:
        return "No task results were found."
    parts = []
    for direction, label in (("fewer", "concentrates its reliance on fewer components than the teacher"),
                             ("more", "spreads its reliance over more components than the teacher"),
                             ("no clear difference", "shows no clear difference in concentration"),
                             ("withheld", "has no finding because a model does not solve the task"),
                             ("not available", "has no concentration statistics")):
        tasks = counts.get(direction, [])
        if tasks:
            parts.append(f"{label} on {len(tasks)} of {len(verdicts)} task{'s' if len(verdicts) > 1 else ''} "
                         f"({', '.join(tasks)})")
    return "The student " + "; it ".join(parts) + "."


def _agreement_cell(a: Agreement | None) -> str:
    return "n/a" if a is None else " / ".join(fmt(v, ".2f") for v in (a.spearman, a.top_k_spearman,
                                                                     a.weighted_correlation))


def agreement_rows(t: ModelTaskRecord, s: ModelTaskRecord) -> list[tuple[str, str, str]]:
    """(label, teacher, student) rows: each estimate against exact as 'all / top k / weighted' (see the glossary).

    Attribution against exact components, then EAP and EAP-IG against exact edges; files written
    before these figures give the overall Spearman alone.
    """
    rows = []
    ta, sa = t.attribution_agreement, s.attribution_agreement
    if ta is not None and sa is not None:
        rows.append((f"attribution vs exact (all / top {ta.top_k} / weighted)", _agreement_cell(ta), _agreement_cell(sa)))
    elif t.attribution_spearman is not None or s.attribution_spearman is not None:
        rows.append(("attribution vs exact (Spearman)", fmt(t.attribution_spearman, ".2f"),
                     fmt(s.attribution_spearman, ".2f")))
    te, se = (((r.edges or {}).get("agreement_vs_exact") or {}) for r in (t, s))
    for method in te:
        if method in se:
            pair = [Agreement.from_json(e[method]) for e in (te, se)]
            rows.append((f"{method.upper()} vs exact edges (all / top {pair[0].top_k} / weighted)",
                         *map(_agreement_cell, pair)))
    return rows
