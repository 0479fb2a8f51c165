"""One model's run on one task as plain arrays: the only input of the analyses.

Here, not in ``pipeline``, so that ``analysis`` never imports the code that runs models
(``pipeline`` produces these records; ``analysis.pair`` consumes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from circuitdiff.analysis.circuits import Circuit, CircuitCurve
from circuitdiff.analysis.influence import ComponentEffect
from circuitdiff.analysis.token_alignment import TokenSpans
from circuitdiff.schema import Agreement, Note

if TYPE_CHECKING:
    from circuitdiff.interventions.edge_methods import EdgeScores
    from circuitdiff.models.components import Component
    from circuitdiff.models.loading import ModelInfo


@dataclass
class ModelTaskRun:
    """One model on one task: the inputs to every analysis."""

    info: ModelInfo
    task: str
    n_prompts: int
    ablation: str
    method: str
    components: list[Component]
    clean: np.ndarray
    base: np.ndarray
    ablated: np.ndarray
    answer_prob: np.ndarray
    effects: list[ComponentEffect]
    read_acts: dict[str, np.ndarray] = field(repr=False)
    residual_read: np.ndarray = field(repr=False)
    attention_read: np.ndarray | None = field(repr=False)
    seq_len: int = 0
    circuits: list[Circuit] = field(default_factory=list)
    circuit_curve: CircuitCurve | None = None
    attribution_spearman: float | None = None
    """Rank correlation of attribution-patching estimates with the exact effects (exact runs only)."""
    attribution_agreement: Agreement | None = None
    """Attribution against the exact effects where it matters: top-k and magnitude-weighted (``analysis.agreement``)."""
    corrupted: np.ndarray | None = None
    """Corrupted-prompt metric per prompt (None without corrupted prompts)."""
    notes: list[Note] = field(default_factory=list)
    """Warnings about this run, passed on to results.json, summary and report."""
    edges: EdgeScores | None = None
    """Edge effects (``--edges``), see ``circuitdiff.interventions.edge_methods``."""
    roles: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Token role -> (n,) position in this model's own tokens, -1 where absent (``tasks.roles``)."""
    template_ids: np.ndarray | None = field(default=None, repr=False)
    template_names: tuple[str, ...] = ()
    mlp_outputs: np.ndarray | None = field(default=None, repr=False)
    """(n_layers, n, seq, d_model) float32: every MLP's output at every position (token-wise cosine)."""
    token_mask: np.ndarray | None = field(default=None, repr=False)
    """(n, seq): 1 on real tokens."""
    mlp_hidden_read: np.ndarray | None = field(default=None, repr=False)
    """(n_layers, n, d_ff): each MLP's hidden activation (input of its down projection) at the read position."""
    token_spans: TokenSpans | None = field(default=None, repr=False)
    """Each token's character span in the prompt text: aligns attention across tokenisations (``analysis.token_alignment``)."""
    multi_token: bool = False
    """Some answer or distractor takes several tokens for this model: the metric is the log-prob difference."""

    @property
    def per_prompt_effects(self) -> np.ndarray:
        """(n_components, n_prompts): ablated - base metric, per prompt."""
        return self.ablated - self.base[None, :]

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.clean > 0))
