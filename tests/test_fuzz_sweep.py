"""Hostile and broken sweep files: a valid sweep or a one-line error; outputs stay in --out.

The parser layer throws random text, random YAML structures shaped like a sweep, mutated
valid files and known YAML attacks (Python tags, alias bombs, deep nesting) at
``parse_sweep``. The CLI layer runs ``circuitdiff sweep`` on structurally plausible files
with hostile names and broken tasks: exit 0 with a merged table and every new file inside
the output folder, or exit 2 with one ``error:`` line and no merged table.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuitdiff.sweep.jobs import job_dir
from circuitdiff.sweep.merge import JOBS_TABLE
from circuitdiff.sweep.spec import SweepFileError, SweepSpec, parse_sweep
from test_fuzz_tasks import assert_clean_outcome, run_cli
from test_resume_kill import write_word_task
from tiny_models import save_tiny

COUNTS = {"parser_cases": 0, "parser_errors": 0, "cli_cases": 0, "cli_errors": 0}
VALID = """\
pairs:
  - {name: tiny, teacher: teacher, student: student, recipe: r1}
tasks: [ioi, alpha.jsonl]
seeds: [0, 1]
ablations: [mean, zero]
options: {n_prompts: 8, n_boot: 10, circuits: false}
"""
HOSTILE_NAMES = ["../../escape", "/etc/passwd", "..", ".", "", " ", "a/b/../../..", "CON", "nul.txt", "~root",
                 "x" * 300, "é/ü", "name\\..\\..", "[/]", "$(rm -rf ~)", "tiny", "TINY", "-", ".hidden"]
ATTACKS = [
    "!!python/object/apply:os.system ['touch /tmp/circuitdiff-pwned']",
    "pairs: !!python/name:os.system\ntasks: [ioi]",
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "pairs: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ntasks: [*d, *d, *d, *d, *d, *d, *d, *d, *d]",
    "[" * 5000 + "]" * 5000,
    "{a: " * 3000 + "1" + "}" * 3000,
    "seeds: [2001-02-30]\npairs: [{teacher: a, student: b}]\ntasks: [ioi]",
    "seeds: [" + "9" * 5000 + "]\npairs: [{teacher: a, student: b}]\ntasks: [ioi]",
    "pairs: [{teacher: a, student: b}]\ntasks: [ioi]\nseeds: [.inf, -1, 1.5, true]",
    "? [a, b]\n: c",
    "pairs: [{teacher: \"a\\0b\", student: b}]\ntasks: [ioi]",
    "\t- tab indented",
    "pairs: [{teacher: a, student: b}]\ntasks: [" + ", ".join(["ioi"] * 2000) + "]",
    "pairs: [{teacher: a, student: b}]\ntasks: [ioi]\noptions: {n_prompts: 1e400, circuits: yes, memory_budget: 1}",
    "pairs: [{teacher: " + "a/" * 200 + "b, student: b}]\ntasks: [ioi]",
    "pairs: [{teacher: ~nosuchuser123/model, student: b}]\ntasks: [ioi]",
    "---\npairs: []\n---\ntasks: []",
]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 2**40), st.floats(), st.text(max_size=12),
                    st.sampled_from(HOSTILE_NAMES), st.sampled_from(["ioi", "mean", "zero", "exact", "a.jsonl"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["name", "teacher", "student", "recipe", "pair", "n_boot", "method", "x"]), inner, max_size=4),
    max_leaves=12)
top_keys = st.sampled_from(["name", "pairs", "tasks", "seeds", "ablations", "options", "out", "Pairs"])
structured = st.dictionaries(top_keys, values, max_size=6).map(lambda d: yaml.safe_dump(d, allow_unicode=True))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """The valid file with a few characters deleted, replaced or inserted."""
    text = VALID
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 6)))
        text = text[:i] + draw(st.text(alphabet=":-[]{},&*!|>'\"#\n\t ab0.", max_size=4)) + text[j:]
    return text


sweep_texts = st.one_of(st.text(max_size=200), structured, mutated(), st.sampled_from(ATTACKS), st.just(VALID))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep-fuzz")
    save_tiny("gpt2", root / "teacher", seed=0)
    save_tiny("gpt2", root / "student", seed=1, n_layers=1)
    write_word_task(root / "alpha.jsonl", seed=1, n=6)
    return root


def check_inside(spec: SweepSpec, out: Path) -> None:
    for job in spec.jobs():
        assert job_dir(out, job).resolve().is_relative_to(out.resolve())


@settings(max_examples=500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(text=sweep_texts)
def test_parser_gives_a_sweep_or_a_one_line_error(base: Path, text: str) -> None:
    COUNTS["parser_cases"] += 1
    try:
        spec = parse_sweep(text, base / "sweep.yaml")
    except SweepFileError as exc:
        COUNTS["parser_errors"] += 1
        assert "\n" not in str(exc) and len(str(exc)) < 1000
        return
    check_inside(spec, base / "out")
    assert not Path("/tmp/circuitdiff-pwned").exists()


def test_the_valid_example_parses(base: Path) -> None:
    spec = parse_sweep(VALID, base / "sweep.yaml")
    assert len(spec.jobs()) == 8 and spec.tasks[0] == "ioi" and spec.tasks[1] == str(base / "alpha.jsonl")
    assert spec.pairs[0].teacher == str(base / "teacher")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_pair_and_task_names_stay_inside(base: Path, name: str) -> None:
    text = yaml.safe_dump({"pairs": [{"name": name, "teacher": "teacher", "student": "student"}],
                           "tasks": ["ioi", f"{name}.jsonl"]})
    try:
        spec = parse_sweep(text, base / "sweep.yaml")
    except SweepFileError as exc:
        assert "\n" not in str(exc)
        return
    check_inside(spec, base / "out")


# --- the CLI, end to end ------------------------------------------------------------------

def _tasks(base: Path) -> dict[str, str]:
    bad = base / "bad.jsonl"
    bad.write_text('{"prompt": "w1"\n', encoding="utf-8")
    two = base / "two-token.jsonl"
    two.write_text("\n".join(json.dumps({"prompt": f"w1 w{i}", "answer": " w4 w5", "distractor": " w6"})  # multi-token
                             for i in range(7, 11)))
    return {"good": str(base / "alpha.jsonl"), "bad": str(bad), "two": str(two), "missing": str(base / "nope.jsonl"),
            "builtin": "ioi"}


cli_sweeps = st.fixed_dictionaries({
    "pairs": st.lists(st.fixed_dictionaries({"teacher": st.sampled_from(["teacher"] * 5 + ["nowhere"]),
                                             "student": st.just("student")},
                                            optional={"name": st.sampled_from(HOSTILE_NAMES),
                                                      "recipe": st.sampled_from(HOSTILE_NAMES)}), min_size=1, max_size=2),
    "tasks": st.lists(st.sampled_from(["good"] * 8 + ["bad", "two", "missing", "builtin"]), min_size=1, max_size=2),
}, optional={"seeds": st.lists(st.sampled_from([0, 1, 2, 3, 0, 1, 2, 3, -1, "x"]), min_size=1, max_size=2),
             "ablations": st.lists(st.sampled_from(["mean", "zero"] * 4 + ["bogus"]), min_size=1, max_size=2)})


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(draft=cli_sweeps)
def test_cli_sweep_gives_merged_results_or_one_line_error(base: Path, draft: dict) -> None:
    COUNTS["cli_cases"] += 1
    tasks = _tasks(base)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for pair in draft["pairs"]:
            pair["teacher"], pair["student"] = str(base / pair["teacher"]), str(base / pair["student"])
        draft["tasks"] = [tasks[t] for t in draft["tasks"]]
        draft["options"] = {"n_boot": 10, "circuits": False, "null_model": False}
        sweep = root / "sweep.yaml"
        sweep.write_text(yaml.safe_dump(draft, allow_unicode=True), encoding="utf-8")
        out = root / "deep" / "out"
        before = set(root.rglob("*"))
        code, err = run_cli(["sweep", str(sweep), "--out", str(out)])
        failed = assert_clean_outcome(code, err, out) if code != 0 else False
        COUNTS["cli_errors"] += failed
        if code == 0:
            assert (out / JOBS_TABLE).is_file()
        else:
            assert not (out / JOBS_TABLE).exists()
        new = {p for p in set(root.rglob("*")) - before if not p.is_dir()}
        assert all(p.resolve().is_relative_to(out.resolve()) for p in new), sorted(new)


def test_zz_report_counts() -> None:
    """Not a check: prints how many inputs the fuzz tests above tried (run with -s)."""
    print(f"\nsweep-file fuzz: {COUNTS}")
