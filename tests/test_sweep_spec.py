"""Sweep files: what a valid one gives, and one-line errors for what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuitdiff.sweep.jobs import job_dir
from circuitdiff.sweep.spec import MAX_JOBS, SweepFileError, load_sweep, parse_sweep

TEN_LINES = """\
name: distil-study
pairs:
  - {name: gpt2, teacher: gpt2, student: distilgpt2, recipe: hf-distil}
  - {name: local, teacher: ./t, student: ./s, recipe: ours}
tasks: [ioi, numerals, ./mine.jsonl]
seeds: [0, 1, 2]
ablations: [mean, zero]
options: {n_prompts: 64, n_boot: 1000, circuits: true, method: exact}
"""


def test_ten_line_sweep(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    spec = parse_sweep(TEN_LINES, tmp_path / "study.yaml")
    jobs = spec.jobs()
    assert len(jobs) == 2 * 3 * 3 * 2 and spec.name == "distil-study"
    assert spec.pairs[0].teacher == "gpt2"  # a Hub id stays a Hub id
    assert spec.pairs[1].teacher == str(tmp_path / "t")  # an existing folder, relative to the sweep file
    assert spec.tasks[2] == str(tmp_path / "mine.jsonl") and spec.task_labels[2] == "mine"
    assert jobs[0].parts == ("gpt2", "ioi", "seed0-mean") and jobs[1].parts == ("gpt2", "ioi", "seed0-zero")
    assert dict(jobs[0].options) == {"n_prompts": 64, "n_boot": 1000, "circuits": True, "method": "exact"}
    assert job_dir(tmp_path / "out", jobs[0]) == tmp_path / "out" / "jobs" / "gpt2" / "ioi" / "seed0-mean"


def test_defaults(tmp_path: Path) -> None:
    spec = parse_sweep("pairs: [{teacher: a, student: b}]\ntasks: [ioi]\n", tmp_path / "s.yaml")
    (job,) = spec.jobs()
    assert (job.pair.name, job.seed, job.ablation, job.options) == ("a-vs-b", 0, "mean", ())


@pytest.mark.parametrize(("text", "why"), [
    ("", "expected a mapping"),
    ("pairs: [", "invalid YAML at line"),
    ("tasks: [ioi]", "missing 'pairs'"),
    ("pairs: [{teacher: a, student: b}]", "missing 'tasks'"),
    ("pairs: [{teacher: a, student: b}]\ntasks: [ioi]\nout: /etc", "unknown key 'out'"),
    ("pairs: [{teacher: a}]\ntasks: [ioi]", "needs both 'teacher' and 'student'"),
    ("pairs: [{teacher: a, student: b, pair: x}]\ntasks: [ioi]", "either 'pair' or"),
    ("pairs: [{teacher: a, student: b, trust_remote_code: true}]\ntasks: [ioi]", "unknown key 'trust_remote_code'"),
    ("pairs: [{teacher: a, student: b}, {teacher: a, student: b}]\ntasks: [ioi]", "twice"),
    ("pairs: [{teacher: a, student: b}]\ntasks: [ioi, ioi]", "twice"),
    ("pairs: [{teacher: a, student: b}]\ntasks: [ioi]\nseeds: [1.5]", "seeds must be integers"),
    ("pairs: [{teacher: a, student: b}]\ntasks: [ioi]\nseeds: [true]", "seeds must be integers"),
    ("pairs: [{teacher: a, student: b}]\ntasks: [ioi]\nablations: [mean, gaussian]", "unknown ablation 'gaussian'"),
    ("pairs: [{teacher: a, student: b}]\ntasks: [ioi]\noptions: {seed: 3}", "unknown key 'seed'"),
    ("pairs: [{teacher: a, student: b}]\ntasks: [ioi]\noptions: {n_prompts: '64'}", "must be int"),
    ("pairs: [{teacher: a, student: b}]\ntasks: [ioi]\noptions: {n_prompts: 2}", "n_prompts must be an integer >= 4"),
    ("pairs: [{teacher: a, student: b}]\ntasks: [ioi]\noptions: {method: fast}", "options.method"),
    ("pairs: [{teacher: \"a\\nb\", student: b}]\ntasks: [ioi]", "control characters"),
    ("!!python/object/apply:os.system ['true']", "invalid YAML"),
    ("pairs: [{pair: no-such-pair}]\ntasks: [ioi]", "unknown built-in pair"),
])
def test_errors_are_one_line(tmp_path: Path, text: str, why: str) -> None:
    with pytest.raises(SweepFileError) as err:
        parse_sweep(text, tmp_path / "s.yaml")
    assert why in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"sweep file '{tmp_path / 's.yaml'}'")


def test_too_many_jobs(tmp_path: Path) -> None:
    seeds = list(range(1000))
    tasks = [f"t{i}.jsonl" for i in range(11)]
    with pytest.raises(SweepFileError, match=str(MAX_JOBS)):
        parse_sweep(f"pairs: [{{teacher: a, student: b}}]\ntasks: {tasks}\nseeds: {seeds}", tmp_path / "s.yaml")


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(SweepFileError, match="not found"):
        load_sweep(tmp_path / "missing.yaml")
    with pytest.raises(SweepFileError, match="not a file"):
        load_sweep(tmp_path)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"pairs: \xff\xfe")
    with pytest.raises(SweepFileError, match="not UTF-8"):
        load_sweep(binary)
    big = tmp_path / "big.yaml"
    big.write_text("#" * (2 << 20))
    with pytest.raises(SweepFileError, match="larger than"):
        load_sweep(big)


def test_options_take_a_similarity_measure(tmp_path: Path) -> None:
    """``measure`` (a CompareOptions field with no entry of its own here) reaches each job's CompareOptions."""
    from circuitdiff.sweep.jobs import RunSettings, compare_options

    spec = parse_sweep("pairs: [{teacher: a, student: b}]\ntasks: [ioi]\noptions: {measure: svcca, n_null: 0}",
                       tmp_path / "s.yaml")
    assert dict(spec.options) == {"measure": "svcca", "n_null": 0}
    options = compare_options(spec.jobs()[0], RunSettings())
    assert (options.measure, options.n_null, options.seed) == ("svcca", 0, 0)
    same = parse_sweep("pairs: [{teacher: a, student: b}]\ntasks: [ioi]\noptions: {measure: linear_cka}",
                       tmp_path / "s.yaml")
    assert dict(same.options) == {"measure": "linear_cka"}


@pytest.mark.parametrize(("options", "why"), [
    ("{measure: cosine_of_nothing}", "options.measure: unknown similarity measure 'cosine_of_nothing'; choose one of"),
    ("{measure: 3}", "options.measure must be str"),
    ("{memory_budget: 5}", "memory budget is a command-line flag"),
    ("{circuit_thresholds: [0.5]}", "unknown key 'circuit_thresholds'"),
])
def test_option_errors_are_one_line(tmp_path: Path, options: str, why: str) -> None:
    with pytest.raises(SweepFileError) as err:
        parse_sweep(f"pairs: [{{teacher: a, student: b}}]\ntasks: [ioi]\noptions: {options}", tmp_path / "s.yaml")
    assert why in str(err.value) and "\n" not in str(err.value)
