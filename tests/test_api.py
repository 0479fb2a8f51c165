"""The Python API as a notebook uses it: ``import circuitdiff`` in a fresh interpreter, then ``compare``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
SMALL = dict(n_prompts=6, n_boot=20, circuits=False, null_model=False)


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a fresh interpreter would (a notebook kernel importing circuitdiff)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=600)


def test_import_is_light_and_options_take_names(tmp_path: Path) -> None:
    proc = python("""
        import sys
        import circuitdiff
        assert "torch" not in sys.modules and "transformers" not in sys.modules, "import circuitdiff is heavy"
        options = circuitdiff.CompareOptions(ablation="zero", method="attribution")
        print(options.ablation.value, options.method.value, type(options.ablation).__name__)
        for bad in (dict(ablation="zro"), dict(method="fastest"), dict(n_prompts=1), dict(n_boot=3),
                    dict(circuit_thresholds=(0.5, 1.5))):
            try:
                circuitdiff.CompareOptions(**bad)
            except ValueError as exc:
                print("refused:", exc)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "zero attribution Ablation"
    refused = lines[1:]
    assert len(refused) == 5
    assert "'zro'" in refused[0] and "zero, mean, resample" in refused[0]
    assert "'fastest'" in refused[1] and "exact, attribution, hybrid" in refused[1]
    assert "n_prompts" in refused[2] and "n_boot" in refused[3] and "between 0 and 1" in refused[4]


def test_in_memory_pair_matches_loading_by_name(tmp_path: Path) -> None:
    """A (model, tokenizer) pair from plain transformers (sdpa attention) gives the same numbers as the name."""
    proc = python(f"""
        import json
        import circuitdiff
        from circuitdiff.models.loading import builtin_model_dir
        from transformers import AutoModelForCausalLM, AutoTokenizer

        def pair(name):
            path = builtin_model_dir(name)
            return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)

        kw = dict(tasks="ioi", progress=False, **{SMALL!r})
        by_name = circuitdiff.compare("tiny-gpt2", "tiny-distilgpt2", **kw)
        in_memory = circuitdiff.compare(pair("tiny-gpt2"), pair("tiny-distilgpt2"), **kw)
        a, b = by_name["tasks"]["ioi"], in_memory["tasks"]["ioi"]
        print(json.dumps([a["alignment"]["score"], b["alignment"]["score"],
                          [c["effect"] for c in a["teacher"]["components"]],
                          [c["effect"] for c in b["teacher"]["components"]]]))
        try:
            circuitdiff.compare(42, "tiny-gpt2", progress=False)
        except ValueError as exc:
            print("refused:", exc)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    score_a, score_b, effects_a, effects_b = json.loads(proc.stdout.splitlines()[0])
    assert score_a == pytest.approx(score_b, abs=1e-6)
    assert effects_a == pytest.approx(effects_b, abs=1e-6) and any(abs(e) > 0 for e in effects_a)
    assert "(model, tokenizer) pair" in proc.stdout.splitlines()[1] and "int" in proc.stdout.splitlines()[1]
    assert "ioi: teacher" not in proc.stderr  # progress=False is silent


def test_api_out_writes_what_the_cli_writes_and_shows_progress(tmp_path: Path) -> None:
    api_out, cli_out = tmp_path / "api", tmp_path / "cli"
    proc = python(f"""
        import circuitdiff
        circuitdiff.compare("tiny-gpt2", "tiny-distilgpt2", ["ioi"], out={str(api_out)!r}, **{SMALL!r})
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ioi: teacher" in proc.stderr and "ioi: student" in proc.stderr  # bars by default
    cli = subprocess.run([sys.executable, "-m", "circuitdiff.cli.main", "compare", "--pair", "tiny-gpt2", "-t", "ioi",
                          "--n-prompts", "6", "--n-boot", "20", "--no-circuits", "--no-null", "--out", str(cli_out)],
                         capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=600)
    assert cli.returncode == 0, cli.stderr
    files = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())  # noqa: E731
    assert files(api_out) == files(cli_out)
    assert "report.html" in files(api_out) and any(f.startswith("figures/") for f in files(api_out))
    api_json = json.loads((api_out / "results.json").read_text())
    cli_json = json.loads((cli_out / "results.json").read_text())
    assert api_json == cli_json


def test_notebook_gets_tqdm_and_a_callable_gets_the_events(monkeypatch) -> None:
    import types

    from circuitdiff import progress as progress_mod

    events: list[tuple[str, float]] = []
    with progress_mod.progress_bars(lambda d, t: (lambda a: events.append((d, a)))) as start:
        start("x", 2)(1)
    assert events == [("x", 1)]
    with progress_mod.progress_bars(False) as start:
        assert start is None
    assert not progress_mod.in_notebook()
    terminal = type("TerminalInteractiveShell", (), {"config": {"TerminalIPythonApp": {}}})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: terminal))
    assert not progress_mod.in_notebook()  # IPython in a terminal keeps rich bars
    shell = type("Shell", (), {"config": {"IPKernelApp": {"connection_file": "kernel.json"}}})()  # e.g. Colab's
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert progress_mod.in_notebook()
    with progress_mod.progress_bars(True) as start:
        advance = start("bar", 3)
        assert getattr(advance, "__self__", None).__class__.__module__.startswith("tqdm")
