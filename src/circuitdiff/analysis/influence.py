"""From ablated metrics to each component's influence: effect, share and percent of clean.

effect  = mean over prompts of (ablated metric - base metric); negative = the component
          supports the answer.
share   = |effect| / sum of |effect| over the model's components.
percent = 100 * effect / |clean metric|, only when the clean metric is far enough from
          zero to mean something (|mean| >= MIN_CLEAN_METRIC and at least two standard
          errors from 0); otherwise None. The reference code divided by near-zero and
          negative clean values; circuitdiff refuses to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from circuitdiff.models.components import Component

MIN_CLEAN_METRIC = 0.1
"""Smallest |mean clean logit difference| (in logits) for which percentages are reported."""


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


def clean_is_meaningful(clean_per_prompt: np.ndarray) -> bool:
    """Whether the clean mean is far enough from 0 for percentages of it to mean something."""
    mean = float(np.mean(clean_per_prompt))
    n = len(clean_per_prompt)
    se = float(np.std(clean_per_prompt, ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    return abs(mean) >= MIN_CLEAN_METRIC and abs(mean) >= 2 * se


def component_effects(
    components: list[Component], ablated: np.ndarray, base: np.ndarray, clean: np.ndarray
) -> list[ComponentEffect]:
    """Effects from the sweep's (n_components, n_prompts) ablated metrics and the base run.

    ``base`` is the run the ablation was applied to (the clean run, or the corrupted run
    for denoising); ``clean`` is the clean run, the reference for percentages.
    """
    effects = ablated.mean(axis=1) - base.mean()
    total = np.abs(effects).sum()
    shares = np.abs(effects) / total if total > 0 else np.zeros_like(effects)
    clean_mean = float(np.mean(clean))
    meaningful = clean_is_meaningful(clean)
    return [
        ComponentEffect(
            name=c.name,
            kind=c.kind,
            layer=c.layer,
            head=c.head,
            effect=float(e),
            share=float(s),
            percent_of_clean=100.0 * float(e) / abs(clean_mean) if meaningful else None,
        )
        for c, e, s in zip(components, effects, shares)
    ]
