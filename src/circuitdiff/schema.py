"""The typed results schema: what ``results.json`` holds, versioned, with its JSON Schema.

Why one schema: the report, the terminal summary and the sweep merger all read
``results.json``; typed records give them one contract, checked when a file is written and
when it is read, so a renamed key fails loudly at the boundary instead of as a ``KeyError``
deep inside a figure. The keys are the ones README "Outputs" documents, so a user reading
the file with plain ``json`` sees the same layout. ``circuitdiff/results.schema.json`` is
generated from these types (``python -m circuitdiff.schema``) and checked in.

The generic machinery (dataclass <-> JSON, JSON Schema from type hints) is ``typed_json``. This module
uses only the standard library: anything (analysis included) may import it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

# Record, SchemaError and json_ready are also imported from here by the readers and writers of results.json
from circuitdiff.typed_json import Record, SchemaError, json_ready, record_json_schema  # noqa: F401

SCHEMA_VERSION = 2
"""1: circuitdiff 0.1.0 (no ``schema_version`` key, notes only as text); 2: structured notes."""

SCHEMA_FILE = Path(__file__).parent / "results.schema.json"

OMIT_NONE = {"omit_none": True}
"""Field metadata: leave the key out of the JSON when the value is None (optional parts)."""


LOGIT_DIFFERENCE = "logit difference"
LOG_PROB_DIFFERENCE = "log-prob difference"


def metric_name(multi_token: bool) -> str:
    """What the task metric is called in labels and notes: the logit difference for one-token answers,
    the log-prob difference (teacher-forced summed log-probabilities, answer minus distractor; equal to
    the logit difference on one-token answers) when an answer or distractor takes several tokens."""
    return LOG_PROB_DIFFERENCE if multi_token else LOGIT_DIFFERENCE


# --- notes -------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Note(Record):
    """A warning about a run, structured so readers select by task, model, topic and code, never by wording.

    ``topic`` groups notes a reader looks for (``circuit``, ``null``, ``paper``, ``finding``,
    ``metric``, ...); ``code`` names the exact case (``circuit.denoising``). ``text`` is for people.
    """

    task: str | None = None
    model: str | None = None
    """The model's name when the note is about one model, else None."""
    role: str | None = None
    """'teacher' or 'student' when the note is about one side of the pair."""
    topic: str
    code: str
    text: str

    @property
    def line(self) -> str:
        """One line as 0.1.0 wrote it into ``warnings``: ``"<task>: model '<name>': <text>"``."""
        parts = [self.task, f"model '{self.model}'" if self.model else None, self.text]
        return ": ".join(p for p in parts if p)


# --- one task ----------------------------------------------------------------------------------

@dataclass
class Stat(Record):
    """A statistic with its BCa bootstrap interval (``lo``/``hi`` null where none could be placed)."""

    point: float | None
    lo: float | None
    hi: float | None
    level: float
    n_valid: int


@dataclass
class ComponentRecord(Record):
    """One component's influence on one task (a row of components.parquet)."""

    name: str
    kind: str
    layer: int
    head: int | None
    effect: float | None
    share: float | None
    percent_of_clean: float | None
    effect_lo: float | None = None
    effect_hi: float | None = None
    percent_of_gap: float | None = None


@dataclass
class Agreement(Record):
    """A cheap estimate (attribution, EAP, EAP-IG) against the exact effects (``analysis.agreement``).

    The overall Spearman is dominated by the many near-zero items; the other two look where it matters.
    """

    n: int
    spearman: float | None
    """Rank correlation over all n items."""
    top_k: int
    top_k_spearman: float | None
    """Rank correlation over the top_k items by exact |effect|."""
    weighted_correlation: float | None
    """Pearson correlation weighted by exact |effect|: near-zero items count for almost nothing."""


@dataclass
class ModelTaskRecord(Record):
    """One model on one task: its metrics and every component's effect."""

    clean_metric: float | None
    base_metric: float | None
    accuracy: float | None
    answer_prob: float | None
    seq_len: int
    attribution_spearman: float | None
    components: list[ComponentRecord]
    edges: dict[str, Any] | None = field(default=None, metadata=OMIT_NONE)
    """Edge effects (``--edges``), see ``circuitdiff.interventions.edge_methods``; with exact edges also
    ``agreement_vs_exact``: method -> ``Agreement`` of EAP and EAP-IG with the exact edge effects."""
    attribution_agreement: Agreement | None = field(default=None, metadata=OMIT_NONE)
    """Attribution patching against the exact component effects (exact runs only)."""


@dataclass
class NullCheck(Record):
    """The null's attribution estimates against exact effects on one random student."""

    seed: int
    components: list[str]
    max_relative_error: float | None
    score_estimated: float | None
    score_with_exact: float | None


@dataclass(kw_only=True)
class Alignment(Record):
    """The influence-weighted alignment score, its interval, chance level and verdict.

    Only score, interval and null are required: files from before the calibrated null lack the rest.
    """

    score: float | None
    ci: list[float | None]
    ci_method: str | None = None
    n_boot: int | None = None
    share_above_point: float | None = None
    null: float | None
    null_q95: float | None = None
    n_null: int = 0
    null_values: list[float | None] = field(default_factory=list)
    null_check: NullCheck | None = None
    above_chance: bool | None = None
    measure: str = "linear_cka"
    """The registered similarity measure behind matching and this score (``analysis.measures``)."""
    similarity_resampling: str | None = None
    """How the interval's resamples compare components: ``weighted`` or ``distinct_prompts`` (fallback)."""
    level: float = 0.95
    paper: float | None = None
    withheld: str | None = None
    """Why the score is None: a model whose components do not move the metric at all has no reliance to compare."""


@dataclass
class MatchRecord(Record):
    student: str
    teacher: str
    similarity: float | None


@dataclass
class Flow(Record):
    """Transport mass from a teacher component to a student component."""

    teacher: str
    student: str
    mass: float | None


@dataclass
class Preserved(Record):
    """An influential teacher component and its most similar same-kind student component."""

    teacher: str
    share: float | None
    student: str
    similarity: float | None


@dataclass
class Finding(Record):
    """Whether concentration and alignment findings are claimed, and why not."""

    claimed: bool
    reason: str | None = None


@dataclass
class Continuation(Record):
    """How one model tokenises an example's answer and distractor (shown when one takes several tokens)."""

    model: str
    """'teacher' or 'student'."""
    answer: list[str]
    distractor: list[str]


@dataclass
class Example(Record):
    prompt: str
    answer: str
    distractor: str
    continuations: list[Continuation] | None = None
    """Per model, the continuation tokens teacher-forced and scored; None when every one is a single token."""


@dataclass
class RoleAttention(Record):
    """How much one influential head attends from the read position to one token role, over one template."""

    role_of_model: str
    """'teacher' or 'student': whose head this is."""
    head: str
    share: float
    """The head's influence share in its own model (as in components.parquet)."""
    counterpart: str | None
    """The matched head in the other model (None when the head is unmatched or matched to an MLP)."""
    template: str
    role: str
    """Token role: S, IO, S2, end (IOI); number k (numerals); subject, end (facts); end, end-1, ... (others)."""
    mean: float
    lo: float
    hi: float
    n_prompts: int


@dataclass
class MLPRepresentation(Record):
    """A matched teacher/student MLP pair compared as the study did, but held out (fit on one half, score on the other)."""

    teacher: str
    student: str
    svcca: Stat
    pwcca: Stat
    principal_cosine: float | None
    """Split-half mean |cos| of the top-3 principal directions (None for unequal widths)."""
    tokenwise_cosine: Stat | None
    """Mean cosine of the outputs at every real position (None unless both tokenise identically)."""


@dataclass
class MLPSparsity(Record):
    """How sparse one MLP's hidden activations are at the read position, per prompt averaged."""

    role_of_model: str
    mlp: str
    near_zero: Stat
    """Share of hidden units with |h| <= threshold."""
    hoyer: Stat
    threshold: float


@dataclass
class ControlResult(Record):
    """The teacher against a control model (``--control``) on one task: the reference study's sanity floor.

    Scored exactly as the pair is (same measure, interval and chance level; ``alignment.paper`` is the
    study's A, aligned across tokenisations), so a pair's alignment can be read against it.
    """

    model: str
    n_prompts: int
    clean_metric: float | None
    accuracy: float | None
    alignment: Alignment
    finding: Finding | None = None


Concentration = dict[str, dict[str, Union[Stat, None]]]
"""role -> statistic name -> interval (None where the statistic is withheld)."""


@dataclass
class TaskResult(Record):
    """Everything results.json says about one task."""

    n_prompts: int
    ablation: str
    teacher: ModelTaskRecord
    student: ModelTaskRecord
    alignment: Alignment
    matching: list[MatchRecord]
    many_to_one: list[MatchRecord]
    transport: list[Flow]
    concentration: Concentration
    concentration_heads: Concentration = field(default_factory=dict)
    finding: Finding | None = None
    circuit: dict[str, Any] = field(default_factory=dict)
    """Circuits per threshold (``analysis.circuits.compare_circuits``); empty without circuits."""
    preserved: list[Preserved] = field(default_factory=list)
    similarity_file: str = "similarity.parquet"
    edge_circuits: list[dict[str, Any]] | None = field(default=None, metadata=OMIT_NONE)
    example: Example | None = None
    attention_roles: list[RoleAttention] = field(default_factory=list)
    """Analysis 3: where the most influential heads and their counterparts attend (empty without eager attention)."""
    mlp_representation: list[MLPRepresentation] = field(default_factory=list)
    mlp_sparsity: list[MLPSparsity] = field(default_factory=list)
    control: ControlResult | None = field(default=None, metadata=OMIT_NONE)
    """The teacher against the control model (``--control``), when one was given."""

    def model(self, role: str) -> ModelTaskRecord:
        return self.teacher if role == "teacher" else self.student

    @property
    def multi_token(self) -> bool:
        """Some model's answer or distractor takes several tokens (its example lists the continuations):
        the metric is then the log-prob difference, not the logit difference."""
        return bool(self.example is not None and self.example.continuations)


# --- the whole file ----------------------------------------------------------------------------

@dataclass
class ModelRecord(Record):
    """A loaded model as results.json describes it (``models.loading.ModelInfo``)."""

    name: str
    architecture: str
    family: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    masked_lm: bool
    n_parameters: int
    quirks: dict[str, bool] = field(default_factory=dict)


@dataclass(kw_only=True)
class Results(Record):
    """``results.json``: options, both models, one entry per task, and the run's notes.

    ``warnings`` keeps the notes as the one-line strings 0.1.0 wrote (for plain-``json``
    readers); ``notes`` holds the same notes structured, and is what circuitdiff reads.
    """

    schema_version: int = SCHEMA_VERSION
    circuitdiff_version: str
    options: dict[str, Any]
    teacher: ModelRecord
    student: ModelRecord
    control: ModelRecord | None = field(default=None, metadata=OMIT_NONE)
    """The control model (``--control``), when one was given."""
    tasks: dict[str, TaskResult]
    notes: list[Note] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    ROLES: ClassVar[tuple[str, str]] = ("teacher", "student")

    @classmethod
    def read(cls, data: Any) -> Results:
        """Check the version, bring a 0.1.0 file up to date, then build the records."""
        if isinstance(data, Results):
            return data
        if not isinstance(data, dict):
            raise SchemaError(f"results: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SchemaError(f"results.json has schema_version {version!r}; this circuitdiff reads up to "
                              f"{SCHEMA_VERSION}: upgrade circuitdiff")
        return cls.from_json(upgrade(data) if version < SCHEMA_VERSION else data)

    def task_notes(self, task: str) -> list[Note]:
        return [n for n in self.notes if n.task == task]

    def model(self, role: str) -> ModelRecord:
        return self.teacher if role == "teacher" else self.student


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 (0.1.0) results dict as version 2: notes rebuilt from the warning lines.

    0.1.0 wrote only text, so the notes get topic 'legacy' and code 'legacy': readers then
    fall back to their default reasons rather than guess from the wording.
    """
    tasks = set(data.get("tasks") or {})
    notes = []
    for line in data.get("warnings") or []:
        head, _, rest = str(line).partition(": ")
        task = head if rest and head in tasks else None
        notes.append(Note(task=task, topic="legacy", code="legacy", text=rest if task else str(line)).to_json())
    return {**data, "schema_version": SCHEMA_VERSION, "notes": notes}


def note_lines(notes: list[Note]) -> list[str]:
    return list(dict.fromkeys(n.line for n in notes))


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of results.json, derived from the records above."""
    root, defs = record_json_schema(Results)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://github.com/circuitdiff/circuitdiff/schema/results.schema.json",
            "title": "circuitdiff results.json", "description": (Results.__doc__ or "").split("\n")[0],
            **root, "$defs": defs}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


if __name__ == "__main__":  # regenerate the checked-in file: python -m circuitdiff.schema
    SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
    print(SCHEMA_FILE)
