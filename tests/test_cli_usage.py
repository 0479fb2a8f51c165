"""Usage errors of the installed ``circuitdiff`` command: one line on stderr, exit 2, no model loaded.

These run the console script that ``pip install`` put next to this Python, against the
typer version the install resolved, so a typer release that changes its exceptions fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMAND = Path(sys.executable).parent / "circuitdiff"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    if not COMMAND.is_file():
        pytest.fail(f"{COMMAND} missing: install circuitdiff (pip install -e .) into this environment")
    return subprocess.run([str(COMMAND), *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)


def assert_usage_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2, nothing on stdout, exactly one non-empty line on stderr naming the problem."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(("args", "needles"), [
    (("compare", "--n-prompts", "0"), ("--n-prompts", "2")),
    (("compare", "--n-prompts", "-5"), ("--n-prompts",)),
    (("compare", "--n-prompts", "1"), ("--n-prompts",)),
    (("compare", "--n-prompts", "many"), ("--n-prompts",)),
    (("compare", "--n-boot", "5"), ("--n-boot", "10")),
    (("compare", "--n-promts", "8"), ("--n-promts", "--n-prompts")),
    (("compare", "--ablation", "zro"), ("zro", "zero")),
    (("compare", "--method", "fast"), ("fast", "exact")),
    (("compare", "--circuit-thresholds", "2"), ("circuit thresholds",)),
    (("compare", "--max-memory", "lots"), ("lots",)),
    (("sweep",), ("sweep_file",)),
    (("sweep", "no-such-sweep.yaml"), ("no-such-sweep.yaml", "not found")),
    (("report", "a", "b"), ("unexpected extra argument",)),
    (("report", "no-such-folder"), ("no-such-folder",)),
    (("frobnicate",), ("frobnicate",)),
    (("tasks", "--verbose"), ("--verbose",)),
    (("lab", "distil", "--no-such-option"), ("--no-such-option",)),
])
def test_usage_error_is_one_line_and_exit_2(args: tuple[str, ...], needles: tuple[str, ...], tmp_path: Path) -> None:
    assert_usage_error(run(*args, cwd=tmp_path), *needles)


def test_paths_are_checked_before_any_model_loads(tmp_path: Path) -> None:
    """A missing teacher would fail on loading; each path error must come first and name the path."""
    missing = str(tmp_path / "no-teacher")
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    proc = run("compare", "--teacher", missing, "--student", missing, "--out", str(a_file))
    assert_usage_error(proc, "taken", "existing file")
    proc = run("compare", "--teacher", missing, "--student", missing, "--out", str(a_file / "below"))
    assert_usage_error(proc, "cannot create output folder", "below")
    sweep = tmp_path / "study.yaml"
    sweep.write_text(f"pairs: [{{teacher: {missing}, student: {missing}}}]\ntasks: [ioi]\n")
    assert_usage_error(run("sweep", str(sweep), "--out", str(a_file)), "taken", "existing file")
    proc = run("compare", "--teacher", missing, "--student", missing, "--task", str(tmp_path / "gone.jsonl"),
               "--out", str(tmp_path / "o"))
    assert_usage_error(proc, "gone.jsonl", "not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')
    proc = run("compare", "--teacher", missing, "--student", missing, "--task", str(bad), "--out", str(tmp_path / "o"))
    assert_usage_error(proc, "bad.jsonl")
    assert "no-teacher" not in proc.stderr


def test_no_arguments_shows_help_and_exits_2() -> None:
    proc = run()
    assert proc.returncode == 2
    assert "compare" in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr


PROBE = """
import sys
sys.argv = ["circuitdiff", *{args!r}]
from circuitdiff.cli.main import main
try:
    main()
except SystemExit as exc:
    heavy = sorted(m for m in ("torch", "transformers", "pandas", "scipy") if m in sys.modules)
    print("EXIT", exc.code, "HEAVY", ",".join(heavy) or "-")
"""


@pytest.mark.parametrize("args", [("--help",), ("tasks",), ("compare", "--help"), ("lab", "--help"), ("features", "--help")])
def test_help_and_tasks_do_not_import_torch(args: tuple[str, ...]) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=list(args))], capture_output=True, text=True,
                          env=ENV, timeout=300)
    last = proc.stdout.strip().splitlines()[-1]
    if args == ("lab", "--help"):  # the lab's help is its own app, which needs torch: only check it works
        assert last.startswith("EXIT 0"), proc.stdout + proc.stderr
        return
    assert last == "EXIT 0 HEAVY -", proc.stdout[-2000:] + proc.stderr


def test_lab_is_listed_in_help() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for command in ("compare", "report", "tasks", "sweep", "lab"):
        assert command in proc.stdout
