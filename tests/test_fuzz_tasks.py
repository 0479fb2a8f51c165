"""Hostile and broken task files: valid results or a one-line error, nothing in between.

Two layers. The parser layer feeds many random files (raw bytes, random JSON lines,
almost-valid records, pathological JSON) to ``get_task`` and ``encode_task`` in-process:
each must give a task or raise a ``CircuitDiffError`` whose message is one line. The CLI
layer runs ``circuitdiff compare`` itself on fewer, mostly well-formed files: exit 0 with
complete results, or exit 2 with one ``error:`` line, no traceback and no results file.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuitdiff.errors import CircuitDiffError
from circuitdiff.tasks import encode_task, get_task
from tiny_models import save_tiny, word_tokenizer

pytestmark = [pytest.mark.filterwarnings("ignore:Generating overly large repr"),
              pytest.mark.filterwarnings("ignore:task file .* ignoring unknown keys")]
COUNTS = {"parser_cases": 0, "parser_errors": 0, "cli_cases": 0, "cli_errors": 0}
WORDS = [f" w{i}" for i in range(4, 60)]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
                         st.sampled_from(WORDS), st.sampled_from(["{mask}", "w1 {mask} w2", "", " ", "\u0000"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
field_values = st.one_of(st.sampled_from(WORDS), st.lists(st.sampled_from(["w1", "w2", "w3", "w7", "{mask}"]),
                                                          min_size=1, max_size=6).map(" ".join), json_values)
KEYS = ["prompt", "answer", "distractor", "corrupted_prompt"]
record = st.dictionaries(st.sampled_from(KEYS + ["extra", "PROMPT"]), field_values, max_size=5)
RAW_LINES = ["", "   ", "{", "[1, 2]", "null", "NaN", '"text"', "\ufeff{}",
             '{"prompt": "w1 w2", "answer": " w3", "distractor": ' + "9" * 5000 + "}",  # huge integer
             "[" * 50_000 + "]" * 50_000,  # deeper than the JSON parser's recursion limit
             '{"prompt": "w1 \\ud800", "answer": " w3", "distractor": " w4"}',  # lone surrogate
             '{"prompt": "w1 [/] [bold]", "answer": " [/]", "distractor": " w4"}',  # markup-looking text
             '{"prompt": "w1\\nw2", "answer": " w3\\n", "distractor": " w4"}']
line = st.one_of(record.map(lambda r: json.dumps(r)), st.sampled_from(RAW_LINES), st.text(max_size=30))
text_files = st.lists(line, max_size=12).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))
byte_files = st.binary(max_size=200)
word_prompt = st.lists(st.sampled_from([f"w{i}" for i in range(4, 60)]), min_size=1, max_size=6).map(" ".join)
good_record = st.tuples(word_prompt, st.sampled_from(WORDS), st.sampled_from(WORDS)).filter(lambda r: r[1] != r[2]).map(
    lambda r: json.dumps({"prompt": r[0], "answer": r[1], "distractor": r[2]}))


@st.composite
def near_valid_lines(draw: st.DrawFn, min_good: int = 1) -> list[str]:
    """Well-formed records with, a third of the time, a few broken lines spliced in."""
    lines = draw(st.lists(good_record, min_size=min_good, max_size=10))
    if draw(st.integers(0, 2)) == 0:
        for _ in range(draw(st.integers(1, 3))):
            lines.insert(draw(st.integers(0, len(lines))), draw(line))
    return lines


near_valid_files = near_valid_lines().map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


def check_one_line(exc: CircuitDiffError) -> None:
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message, repr(message)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.one_of(text_files, byte_files, near_valid_files), masked=st.booleans(), first_token=st.booleans())
def test_parser_gives_a_task_or_a_one_line_error(tokenizer, content: bytes, masked: bool, first_token: bool) -> None:
    COUNTS["parser_cases"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "task.jsonl"
        path.write_bytes(content)
        try:
            task = get_task(str(path), masked=masked)
            encode_task(task, tokenizer, first_token=first_token)
        except CircuitDiffError as exc:
            COUNTS["parser_errors"] += 1
            check_one_line(exc)


# --- the CLI, end to end -----------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fuzz-models")
    return save_tiny("gpt2", root / "teacher", seed=0), save_tiny("gpt2", root / "student", seed=1, n_layers=1)


def run_cli(args: list[str]) -> tuple[int, str]:
    """``circuitdiff ARGS`` in this process: (exit code, stderr)."""
    from circuitdiff.cli.main import main

    err, out = io.StringIO(), io.StringIO()
    argv, threads = sys.argv, torch.get_num_threads()
    sys.argv = ["circuitdiff", *args]
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
    return code, err.getvalue()


def assert_clean_outcome(code: int, err: str, out: Path) -> bool:
    """Valid results, or exit 2 with one error line and no result files. True if it failed."""
    assert "Traceback" not in err, err
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")] if out.exists() else []
    assert leftovers == []
    if code == 0:
        results = json.loads((out / "results.json").read_text())
        assert results["tasks"]
        return False
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert not (out / "results.json").exists()
    return True


answers = st.one_of(st.sampled_from(WORDS), st.sampled_from([" w1 w2", "w3", " unknown", " [/]", " ", " {mask}"]))
cli_record = st.fixed_dictionaries({"prompt": word_prompt, "answer": answers, "distractor": answers},
                                   optional={"corrupted_prompt": st.one_of(word_prompt, st.none(), st.integers())})
cli_files = st.one_of(near_valid_lines(min_good=4), near_valid_lines(min_good=4),
                      st.lists(st.one_of(cli_record.map(json.dumps), st.sampled_from(RAW_LINES)), max_size=10))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(lines=cli_files, ablation=st.sampled_from(["mean", "mean", "zero", "resample", "noising", "bogus"]))
def test_cli_gives_results_or_one_line_error(models: tuple[Path, Path], lines: list[str], ablation: str) -> None:
    COUNTS["cli_cases"] += 1
    teacher, student = models
    with tempfile.TemporaryDirectory() as tmp:
        task = Path(tmp) / "fuzz.jsonl"
        task.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
        out = Path(tmp) / "out"
        code, err = run_cli(["compare", "--teacher", str(teacher), "--student", str(student), "-t", str(task),
                             "--ablation", ablation, "--n-boot", "10", "--no-circuits", "--no-null", "--no-report",
                             "--out", str(out)])
        COUNTS["cli_errors"] += assert_clean_outcome(code, err, out)


def test_zz_report_counts() -> None:
    """Not a check: prints how many inputs the fuzz tests above tried (run with -s)."""
    print(f"\ntask-file fuzz: {COUNTS}")
