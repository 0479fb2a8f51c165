"""The intervention choices a user names: ablation type, effect method, default memory budget.

Plain enums and constants without torch, so that option checking, sweep files and the CLI
can name the choices (and derive their lists) without importing the model code.
"""

from __future__ import annotations

from enum import Enum

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of activations per forward pass


class Ablation(str, Enum):
    """What replaces a component's activation."""

    ZERO = "zero"
    """Zeros: the component writes nothing (for a head, its slice of the o-proj input is 0)."""
    MEAN = "mean"
    """Per-position mean over the reference prompts (the task's corrupted prompts by default)."""
    RESAMPLE = "resample"
    """The activation from a randomly chosen reference prompt, at the same positions."""
    NOISING = "noising"
    """Activation patching, corrupted into clean: the paired corrupted prompt's activation."""
    DENOISING = "denoising"
    """Activation patching, clean into corrupted: the base run is the corrupted prompt and the
    clean prompt's activation is patched in; effects measure how much a component restores."""

    @property
    def base_is_corrupted(self) -> bool:
        return self is Ablation.DENOISING

    @property
    def needs_corrupted(self) -> bool:
        return self in (Ablation.NOISING, Ablation.DENOISING)


class Method(str, Enum):
    """How component effects are computed."""

    EXACT = "exact"
    """One ablated forward per component (batched): the ground truth."""
    ATTRIBUTION = "attribution"
    """Gradient x activation difference: one forward and one backward for all components."""
    HYBRID = "hybrid"
    """Attribution for all, then exact ablation for the top ``exact_top`` by |estimate|."""
