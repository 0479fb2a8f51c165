"""From ablated metrics to each component's influence: effect, share, percentages, intervals.

effect  = mean over prompts of (ablated metric - base metric), with a percentile bootstrap
          interval over prompts (``effect_lo``/``effect_hi``). Ablations (zero, mean,
          resample, noising): negative = the component supports the answer. Denoising (the
          base run is corrupted, the component gets its clean activation): positive = the
          component restores the answer.
share   = |effect| / sum of |effect| over the model's components.
percent_of_clean = 100 * effect / clean metric (zero, mean, resample), only when the clean
          metric is clearly positive: mean >= MIN_CLEAN_METRIC and at least two standard
          errors above 0. A negative clean metric means the model prefers the distractor, and
          a percentage of it reverses every sign; the reference code divided by such values.
percent_of_gap = the share of the clean - corrupted gap that runs through the component
          (noising: -100 effect / gap, lost when it alone is corrupted; denoising:
          100 effect / gap, restored when it alone is clean), only when the gap is clearly
          positive. Percent of clean has no meaning for patching and is null there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from circuitdiff.analysis.bootstrap import bootstrap_indices, percentile_interval, resample_weights
from circuitdiff.interventions.choices import Ablation
from circuitdiff.models.components import Component
from circuitdiff.schema import LOGIT_DIFFERENCE

MIN_CLEAN_METRIC = 0.1
"""Smallest mean clean logit difference (in logits) for which percentages are reported."""

PATCHING = tuple(a.value for a in Ablation if a.needs_corrupted)
"""Ablation types whose statistics are taken relative to the clean - corrupted gap."""

WITHHELD = "percent of clean, drops, worst-5% mean, severity, circuits and paper A are withheld"


@dataclass(frozen=True)
class ComponentEffect:
    """One component's influence on one task (a row of components.parquet)."""

    name: str
    kind: str
    layer: int
    head: int | None
    effect: float
    share: float
    percent_of_clean: float | None
    effect_lo: float | None = None
    effect_hi: float | None = None
    percent_of_gap: float | None = None


def positive_problem(values: np.ndarray, what: str) -> str | None:
    """Why the mean of ``values`` is not clearly positive (None when it is).

    Clearly positive: mean >= MIN_CLEAN_METRIC and at least two standard errors above 0.
    """
    v = np.asarray(values, dtype=np.float64)
    mean = float(np.mean(v))
    n = len(v)
    se = float(np.std(v, ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    if mean < 0:
        return f"{what} {mean:.3g} is negative (the model prefers the distractor)"
    if mean < MIN_CLEAN_METRIC:
        return f"{what} {mean:.3g} is below {MIN_CLEAN_METRIC:g}"
    if mean < 2 * se:
        return f"{what} {mean:.3g} is within two standard errors ({se:.2g}) of 0"
    return None


def clean_problem(clean_per_prompt: np.ndarray, metric: str = LOGIT_DIFFERENCE) -> str | None:
    """Why percentages of the clean metric mean nothing here (None when they do); ``metric`` names it."""
    return positive_problem(clean_per_prompt, f"clean {metric}")


def clean_is_meaningful(clean_per_prompt: np.ndarray) -> bool:
    """Whether the clean metric is clearly positive, so that fractions of it mean something."""
    return clean_problem(clean_per_prompt) is None


def drop_inputs(per_prompt_effects: np.ndarray, clean: np.ndarray, corrupted: np.ndarray | None,
                ablation: str) -> tuple[np.ndarray, np.ndarray]:
    """(effects, normaliser) per prompt such that drop = -100 effect / normaliser, positive = carries the task.

    Ablation: the effects themselves over the clean metric. Noising: over the clean -
    corrupted gap. Denoising: the sign-flipped (restoring) effects over the gap, so a drop
    is the percent of the gap the component restores.
    """
    if ablation not in PATCHING:
        return per_prompt_effects, clean
    if corrupted is None:
        raise ValueError(f"{ablation} statistics need the corrupted metric")
    gap = clean - corrupted
    return (-per_prompt_effects if ablation == "denoising" else per_prompt_effects), gap


def relative_problem(clean: np.ndarray, corrupted: np.ndarray | None, ablation: str,
                     metric: str = LOGIT_DIFFERENCE) -> str | None:
    """Why statistics relative to clean (ablation) or to the gap (patching) are withheld."""
    if ablation in PATCHING:
        if corrupted is None:
            return "no corrupted metric"
        return positive_problem(clean - corrupted, f"clean - corrupted {metric} gap")
    return clean_problem(clean, metric)


def effect_intervals(per_prompt: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> list[tuple[float, float]]:
    """Percentile bootstrap interval over prompts of each component's mean effect."""
    n = per_prompt.shape[1]
    means = per_prompt @ resample_weights(bootstrap_indices(n, n_boot, seed), n).T  # (components, n_boot)
    return [percentile_interval(row, level) for row in means]


def component_effects(
    components: list[Component], ablated: np.ndarray, base: np.ndarray, clean: np.ndarray, *,
    ablation: str = "mean", corrupted: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
) -> list[ComponentEffect]:
    """Effects from the sweep's (n_components, n_prompts) ablated metrics and the base run.

    ``base`` is the run the ablation was applied to (the clean run, or the corrupted run
    for denoising); ``clean`` is the clean run, the reference for percentages;
    ``corrupted`` the corrupted run (needed for percent of gap under patching).
    """
    per_prompt = ablated - base[None, :]
    effects = ablated.mean(axis=1) - base.mean()
    total = np.abs(effects).sum()
    shares = np.abs(effects) / total if total > 0 else np.zeros_like(effects)
    intervals = effect_intervals(per_prompt, n_boot, seed)
    percent: list[float | None] = [None] * len(components)
    gap_percent: list[float | None] = [None] * len(components)
    if relative_problem(clean, corrupted, ablation) is None:
        signed, norm = drop_inputs(effects[:, None], clean, corrupted, ablation)
        scaled = (-100.0 * signed[:, 0] / float(np.mean(norm))).tolist()
        if ablation in PATCHING:
            gap_percent = scaled
        else:
            percent = (100.0 * effects / float(np.mean(clean))).tolist()
    return [
        ComponentEffect(
            name=c.name, kind=c.kind, layer=c.layer, head=c.head, effect=float(e), share=float(s),
            percent_of_clean=p, effect_lo=lo, effect_hi=hi, percent_of_gap=g,
        )
        for c, e, s, p, (lo, hi), g in zip(components, effects, shares, percent, intervals, gap_percent, strict=True)
    ]


CHANCE_ACCURACY = 0.5
"""A model that ignores the prompt prefers the answer to the one distractor half the time."""
SOLVED_P = 0.05
"""One-sided binomial p-value below which accuracy counts as clearly above chance."""


def solved_problem(clean_per_prompt: np.ndarray, metric: str = LOGIT_DIFFERENCE) -> str | None:
    """Why a model does not clearly solve the task (None when it does).

    Solving means accuracy (share of prompts with a positive metric) clearly above the 50% chance
    of a two-way choice (one-sided binomial test, p < SOLVED_P) and a clearly positive mean clean
    metric (``metric`` names it). Only then are findings about its mechanisms claimed.
    """
    from scipy.stats import binomtest

    v = np.asarray(clean_per_prompt, dtype=np.float64)
    k, n = int((v > 0).sum()), len(v)
    p = float(binomtest(k, n, CHANCE_ACCURACY, alternative="greater").pvalue)
    if p >= SOLVED_P:
        return f"accuracy {k / n:.0%} of {n} prompts is not clearly above chance ({CHANCE_ACCURACY:.0%}; binomial p = {p:.2g})"
    return clean_problem(v, metric)
