"""Sweep files: a small YAML file naming pairs, tasks, seeds and ablations; one job per combination.

    pairs:
      - {name: gpt2, teacher: gpt2, student: distilgpt2, recipe: hf-distil}
      - {teacher: ./teachers/t1, student: ./students/s1}
    tasks: [ioi, numerals, ./my-task.jsonl]
    seeds: [0, 1, 2]
    ablations: [mean, zero]
    options: {n_prompts: 64, n_boot: 1000, circuits: true}

Relative model folders and task files are read relative to the sweep file. The file is
untrusted input: it is parsed with ``yaml.safe_load`` (no Python objects), every key and
type is checked, sizes are bounded, and it can neither choose where outputs go nor enable
pickle checkpoints or remote code (those stay command-line flags). Every problem is a
one-line ``SweepFileError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from circuitdiff.errors import CircuitDiffError
from circuitdiff.interventions.choices import Ablation
from circuitdiff.names import safe_name

MAX_BYTES = 1 << 20
MAX_ITEMS = 1000
MAX_JOBS = 10_000
MAX_TEXT = 500
ABLATIONS = tuple(a.value for a in Ablation)
TOP_KEYS = {"name", "pairs", "tasks", "seeds", "ablations", "options"}
PAIR_KEYS = {"name", "teacher", "student", "recipe", "pair"}
NOT_OPTIONS = {"ablation": "ablations are a list of their own", "seed": "seeds are a list of their own",
               "memory_budget": "the memory budget is a command-line flag of the machine that runs the sweep"}
"""CompareOptions fields a sweep file may not set in ``options``, and why."""
MAX_OPTION_INT = 1_000_000


@cache
def option_types() -> dict[str, type]:
    """The ``options`` a sweep file may set and their YAML types, derived from ``CompareOptions``.

    Every scalar field (enums as their string names) except ``NOT_OPTIONS``, so a new
    comparison option is settable in sweep files without a second list. Imported lazily:
    ``CompareOptions`` pulls in torch, which parsing a file must not need up front.
    """
    from circuitdiff.options import CompareOptions

    hints = get_type_hints(CompareOptions)
    types: dict[str, type] = {}
    for f in fields(CompareOptions):
        kind = str if isinstance(hints[f.name], type) and issubclass(hints[f.name], Enum) else hints[f.name]
        if f.name not in NOT_OPTIONS and kind in (int, bool, str):
            types[f.name] = kind
    return types


class SweepFileError(CircuitDiffError):
    """A sweep file is unreadable, not YAML, or does not describe a sweep."""


@dataclass(frozen=True)
class SweepPair:
    """One pair of a sweep file: two model names or paths (``lab.pairs.PairSpec`` is a built-in pair's recipe)."""

    name: str
    teacher: str
    student: str
    recipe: str = ""


@dataclass(frozen=True)
class Job:
    """One comparison: one pair on one task with one seed and one ablation."""

    pair: SweepPair
    task: str
    task_label: str
    seed: int
    ablation: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def parts(self) -> tuple[str, str, str]:
        """Folder names under ``OUT/jobs`` (each made safe by ``names.inside``)."""
        return self.pair.name, self.task_label, f"seed{self.seed}-{self.ablation}"

    @property
    def label(self) -> str:
        return f"{self.pair.name} / {self.task_label} / seed {self.seed} / {self.ablation}"

    def describe(self) -> dict[str, Any]:
        """Everything that decides this job's results, as plain data (stored with them)."""
        return {"pair": self.pair.name, "teacher": self.pair.teacher, "student": self.pair.student,
                "recipe": self.pair.recipe, "task": self.task, "seed": self.seed, "ablation": self.ablation,
                "options": dict(self.options)}


@dataclass(frozen=True)
class SweepSpec:
    name: str
    pairs: tuple[SweepPair, ...]
    tasks: tuple[str, ...]
    task_labels: tuple[str, ...]
    seeds: tuple[int, ...]
    ablations: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def jobs(self) -> list[Job]:
        """Pairs outermost, so consecutive jobs reuse loaded models."""
        opts = tuple(sorted(self.options.items()))
        return [Job(p, t, label, s, a, opts) for p in self.pairs for t, label in zip(self.tasks, self.task_labels)
                for s in self.seeds for a in self.ablations]


def _show(value: Any) -> str:
    """A value for a one-line message: short, no newlines, and never the repr of a big structure."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(value).__name__}"


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, why: str) -> SweepFileError:
        return SweepFileError(f"sweep file '{self.path}': {why}")

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where} must be a non-empty string, got {_show(value)}")
        if len(value) > MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise self.fail(f"{where} is too long or holds control characters: {_show(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise self.fail(f"{where} is not valid text: {_show(value)}") from None
        return value

    def items(self, data: dict[str, Any], key: str, default: list[Any] | None = None) -> list[Any]:
        if key not in data:
            if default is None:
                raise self.fail(f"missing '{key}'")
            return default
        value = data[key]
        if not isinstance(value, list) or not value:
            raise self.fail(f"'{key}' must be a non-empty list, got {_show(value)}")
        if len(value) > MAX_ITEMS:
            raise self.fail(f"'{key}' has {len(value)} entries (at most {MAX_ITEMS})")
        return value

    def unique(self, values: list[Any], key: str) -> None:
        seen = set()
        for v in values:
            if v in seen:
                raise self.fail(f"'{key}' lists {_show(v)} twice")
            seen.add(v)


def _path(r: _Reader, spec: str, base: Path, where: str) -> Path:
    """``spec`` relative to the sweep file's folder, absolute (so Ray workers find it too)."""
    try:
        path = (base / Path(spec).expanduser()).resolve()
        path.exists()  # long names and loops fail here, not later
        return path
    except (OSError, RuntimeError, ValueError) as exc:
        raise r.fail(f"{where}: unusable path {_show(spec)} ({type(exc).__name__})") from None


def _model(r: _Reader, spec: str, base: Path, where: str) -> str:
    """Resolve a model relative to the sweep file; built-ins and Hub ids stay as they are."""
    from circuitdiff.models.loading import builtin_model_dir

    try:
        if builtin_model_dir(spec) is not None:
            return spec
    except (OSError, ValueError):
        pass  # not a built-in; _path says what is wrong with it
    local = _path(r, spec, base, where)
    return str(local) if local.exists() else spec


def _task(r: _Reader, spec: str, base: Path, where: str) -> tuple[str, str]:
    """(task argument for compare, label for folders and tables)."""
    from circuitdiff.tasks import BUILTIN_TASKS

    if spec in BUILTIN_TASKS:
        return spec, spec
    path = _path(r, spec, base, where)
    return str(path), path.stem or path.name or "task"


def _pair(r: _Reader, i: int, entry: Any, base: Path) -> SweepPair:
    where = f"pairs[{i}]"
    if not isinstance(entry, dict):
        raise r.fail(f"{where} must be a mapping with 'teacher' and 'student' (or 'pair'), got {_show(entry)}")
    unknown = sorted(str(k) for k in entry if k not in PAIR_KEYS)
    if unknown:
        raise r.fail(f"{where}: unknown key {_show(unknown[0])} (allowed: {', '.join(sorted(PAIR_KEYS))})")
    recipe = r.text(entry["recipe"], f"{where}.recipe") if "recipe" in entry else ""
    if "pair" in entry:
        if "teacher" in entry or "student" in entry:
            raise r.fail(f"{where}: give either 'pair' or 'teacher' and 'student', not both")
        from circuitdiff.pairs_index import resolve_pair

        builtin = r.text(entry["pair"], f"{where}.pair")
        try:
            teacher, student, _ = resolve_pair(builtin, None, None)
        except CircuitDiffError as exc:
            raise r.fail(f"{where}: {exc}") from None
        name = r.text(entry.get("name", builtin), f"{where}.name")
        return SweepPair(name, teacher, student, recipe)
    if "teacher" not in entry or "student" not in entry:
        raise r.fail(f"{where} needs both 'teacher' and 'student' (or a built-in 'pair')")
    teacher = r.text(entry["teacher"], f"{where}.teacher")
    student = r.text(entry["student"], f"{where}.student")
    default_name = f"{Path(teacher).name or teacher}-vs-{Path(student).name or student}"
    name = r.text(entry.get("name", default_name), f"{where}.name")
    return SweepPair(name, _model(r, teacher, base, f"{where}.teacher"), _model(r, student, base, f"{where}.student"),
                    recipe)


def _options(r: _Reader, data: dict[str, Any]) -> dict[str, Any]:
    raw = data.get("options", {})
    if raw is None or raw == {}:  # nothing to check: CompareOptions (and torch) stay unimported
        return {}
    if not isinstance(raw, dict):
        raise r.fail(f"'options' must be a mapping, got {_show(raw)}")
    from circuitdiff.options import CompareOptions, OptionsError

    types, out = option_types(), {}
    for key, value in raw.items():
        if key not in types:
            why = f"; {NOT_OPTIONS[key]}" if key in NOT_OPTIONS else ""
            raise r.fail(f"options: unknown key {_show(key)} (allowed: {', '.join(types)}{why})")
        kind = types[key]
        if type(value) is not kind:  # bool is not an int here
            raise r.fail(f"options.{key} must be {kind.__name__}, got {_show(value)}")
        if kind is int and value > MAX_OPTION_INT:
            raise r.fail(f"options.{key} must be at most {MAX_OPTION_INT}, got {value}")
        try:  # the bounds and names CompareOptions checks (n_prompts >= 4, a registered measure, ...)
            CompareOptions(**{key: value})
        except OptionsError as exc:
            raise r.fail(f"options.{key}: {exc}") from None
        out[key] = value
    return out


def parse_sweep(text: str, path: Path) -> SweepSpec:
    """Validate a sweep file's text; relative paths are taken relative to ``path``'s folder."""
    r = _Reader(path)
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise r.fail(f"invalid YAML{at}: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise r.fail(f"invalid YAML: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise r.fail(f"expected a mapping with 'pairs' and 'tasks', got {_show(data)}")
    unknown = sorted(str(k) for k in data if k not in TOP_KEYS)
    if unknown:
        raise r.fail(f"unknown key {_show(unknown[0])} (allowed: {', '.join(sorted(TOP_KEYS))}; "
                     "the output folder is chosen with --out)")
    base = path.resolve().parent
    pairs = tuple(_pair(r, i, e, base) for i, e in enumerate(r.items(data, "pairs")))
    r.unique([p.name for p in pairs], "pairs (names)")
    task_specs = [r.text(t, f"tasks[{i}]") for i, t in enumerate(r.items(data, "tasks"))]
    resolved = [_task(r, t, base, f"tasks[{i}]") for i, t in enumerate(task_specs)]
    r.unique([label for _, label in resolved], "tasks (names)")
    seeds = r.items(data, "seeds", [0])
    for s in seeds:
        if type(s) is not int or not 0 <= s < 2**32:
            raise r.fail(f"seeds must be integers in [0, 2^32), got {_show(s)}")
    r.unique(seeds, "seeds")
    ablations = r.items(data, "ablations", ["mean"])
    for a in ablations:
        if a not in ABLATIONS:
            raise r.fail(f"unknown ablation {_show(a)}; choose from {', '.join(ABLATIONS)}")
    r.unique(ablations, "ablations")
    options = _options(r, data)
    name = r.text(data.get("name", path.stem or "sweep"), "name")
    n_jobs = len(pairs) * len(resolved) * len(seeds) * len(ablations)
    if n_jobs > MAX_JOBS:
        raise r.fail(f"{n_jobs} jobs is more than the limit of {MAX_JOBS}; split the sweep")
    return SweepSpec(safe_name(name), pairs, tuple(t for t, _ in resolved), tuple(label for _, label in resolved),
                     tuple(seeds), tuple(ablations), options)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file (one-line ``SweepFileError`` on any problem)."""
    path = Path(path).expanduser()
    r = _Reader(path)
    try:
        if not path.is_file():
            raise r.fail("not found" if not path.exists() else "not a file")
        if path.stat().st_size > MAX_BYTES:
            raise r.fail(f"larger than {MAX_BYTES >> 20} MiB")
        raw = path.read_bytes()
    except OSError as exc:
        raise r.fail(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise r.fail(f"is not UTF-8 text (byte {exc.start})") from None
    return parse_sweep(text, path)
