"""Unsafe input is refused in one line: pickle checkpoints, remote code, non-finite metrics,
names that would place files outside the output folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from circuitdiff.compare import CompareOptions, compare
from circuitdiff.errors import NumericalError
from circuitdiff.names import inside, safe_name
from circuitdiff.checkpoint import TaskStore
from test_fuzz_tasks import assert_clean_outcome, run_cli
from test_resume_kill import write_word_task
from tiny_models import save_tiny, tiny_model, word_tokenizer

FAST = ["--n-boot", "10", "--no-circuits", "--no-null", "--no-report"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("safety")
    save_tiny("gpt2", root / "teacher", seed=0)
    save_tiny("gpt2", root / "student", seed=1, n_layers=1)
    write_word_task(root / "words.jsonl", seed=3, n=8)
    pickled = root / "pickled"
    pickled.mkdir()
    model = tiny_model("gpt2", seed=0)
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    word_tokenizer().save_pretrained(pickled)
    return root


def test_pickle_checkpoint_needs_allow_pickle(ws: Path, tmp_path: Path) -> None:
    args = ["compare", "--teacher", str(ws / "pickled"), "--student", str(ws / "student"), "-t", str(ws / "words.jsonl"),
            *FAST, "--out", str(tmp_path / "a")]
    code, err = run_cli(args)
    assert assert_clean_outcome(code, err, tmp_path / "a") and "--allow-pickle" in err
    code, err = run_cli(args[:-1] + [str(tmp_path / "b"), "--allow-pickle"])
    assert code == 0, err


def test_remote_code_never_runs_without_the_flag(ws: Path, tmp_path: Path) -> None:
    repo = tmp_path / "remote"
    save_tiny("gpt2", repo)
    config = json.loads((repo / "config.json").read_text())
    config.update(model_type="evilgpt", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"})
    (repo / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "code-ran"
    (repo / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "class EvilConfig(GPT2Config):\n    model_type = 'evilgpt'\n"
        "class EvilModel(GPT2LMHeadModel):\n    config_class = EvilConfig\n")
    args = ["compare", "--teacher", str(repo), "--student", str(ws / "student"), "-t", str(ws / "words.jsonl"), *FAST,
            "--out", str(tmp_path / "out")]
    code, err = run_cli(args)
    assert assert_clean_outcome(code, err, tmp_path / "out") and "custom code" in err
    assert not marker.exists()
    code, err = run_cli(args + ["--trust-remote-code"])  # the flag is what lets it run (then: unknown family)
    assert marker.exists() and code == 2


def test_nan_metric_stops_the_run_naming_component_and_task(ws: Path, tmp_path: Path, monkeypatch) -> None:
    import circuitdiff.pipeline as pipeline

    real = pipeline.ablated_metrics

    def poisoned(adapter, *args, **kwargs):
        out = real(adapter, *args, **kwargs)
        if adapter.n_layers == 2:  # the teacher
            out[3] = float("nan")
        return out

    monkeypatch.setattr(pipeline, "ablated_metrics", poisoned)
    with pytest.raises(NumericalError) as err:
        compare(str(ws / "teacher"), str(ws / "student"), [str(ws / "words.jsonl")],
                CompareOptions(n_boot=10, circuits=False, null_model=False), tmp_path)
    message = str(err.value)
    assert "L0.H3" in message and "words" in message and "non-finite" in message
    assert not (tmp_path / "results.json").exists()


def test_infinite_weights_stop_the_cli_in_one_line(ws: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    model = tiny_model("gpt2", seed=0)
    with torch.no_grad():
        model.transformer.wte.weight.fill_(float("inf"))
    model.save_pretrained(broken)
    word_tokenizer().save_pretrained(broken)
    out = tmp_path / "out"
    code, err = run_cli(["compare", "--teacher", str(broken), "--student", str(ws / "student"), "-t",
                         str(ws / "words.jsonl"), *FAST, "--out", str(out)])
    assert assert_clean_outcome(code, err, out)
    assert "non-finite" in err and "words" in err


@pytest.mark.parametrize("name", ["../../evil", "/etc/passwd", "..", "", "a/../../b", "CON", "x" * 500, "é\u0000.json",
                                  ".hidden", "ok-name.jsonl"])
def test_names_never_leave_the_output_folder(tmp_path: Path, name: str) -> None:
    slug = safe_name(name)
    assert slug and "/" not in slug and not slug.startswith(".") and len(slug) <= 80
    assert inside(tmp_path, name).resolve().parent == tmp_path.resolve()
    store = TaskStore(tmp_path, "run")
    for path in store._paths(name):
        assert path.resolve().is_relative_to((tmp_path / "tasks").resolve())


def test_distinct_names_get_distinct_files() -> None:
    names = ["a b", "a-b", "a/b", "a\\b", "A B", "a b ", "../a b"]
    assert len({safe_name(n) for n in names}) == len(names)


def test_odd_task_file_names_are_checkpointed_inside(ws: Path, tmp_path: Path) -> None:
    odd = tmp_path / "in" / "..[weird] name;rm -rf.jsonl"
    odd.parent.mkdir()
    odd.write_text((ws / "words.jsonl").read_text())
    out = tmp_path / "out"
    compare(str(ws / "teacher"), str(ws / "student"), [str(odd)], CompareOptions(n_boot=10, circuits=False,
                                                                                 null_model=False), out)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and all(p.resolve().is_relative_to(out.resolve()) for p in files)
    assert len(list((out / "tasks").glob("*.json"))) == 1
    assert np.isfinite(json.loads((out / "results.json").read_text())["tasks"].popitem()[1]["alignment"]["score"])
