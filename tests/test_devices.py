"""Large-model plumbing on CPU: dtypes, device maps (accelerate), sharded and offloaded
models under hooks, memory-budgeted micro-batching and the out-of-memory retry."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from circuitdiff.compare import CompareOptions, compare
from circuitdiff.resources import MIN_BUDGET, ResourceError, check_device, parse_dtype, parse_memory
from test_fuzz_tasks import assert_clean_outcome, run_cli
from test_resume_kill import write_word_task
from tiny_models import save_tiny

OPTIONS = CompareOptions(n_boot=10, circuits=True, null_model=False)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("devices")
    save_tiny("gpt2", root / "teacher", seed=0, n_layers=3)
    save_tiny("gpt2", root / "student", seed=1, n_layers=1)
    write_word_task(root / "words.jsonl", seed=5, n=12)
    return root


@pytest.fixture(scope="module")
def plain(ws: Path) -> dict:
    return compare(str(ws / "teacher"), str(ws / "student"), [str(ws / "words.jsonl")], OPTIONS)


def _task(results: dict) -> dict:
    (entry,) = results["tasks"].values()
    return entry


def _effects(results: dict, role: str = "teacher") -> np.ndarray:
    return np.array([c["effect"] for c in _task(results)[role]["components"]])


@pytest.mark.parametrize(("text", "expected"), [("4GB", 4 * 10**9), ("512MiB", 512 << 20), ("2000000000", 2 * 10**9),
                                                ("1.5 gb", 15 * 10**8), ("auto", None), (None, None)])
def test_memory_sizes(text: str | None, expected: int | None) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "4 parsecs", "-1GB", "1KB", ""])
def test_bad_memory_sizes_are_one_line_errors(text: str) -> None:
    with pytest.raises(ResourceError) as err:
        parse_memory(text)
    assert "\n" not in str(err.value)


def test_bad_dtype_and_device() -> None:
    with pytest.raises(ResourceError, match="unknown dtype"):
        parse_dtype("float8")
    with pytest.raises(ResourceError, match="device-map"):
        check_device("cpu", "balanced")
    with pytest.raises(ResourceError, match="unknown device"):
        check_device("gpu0", None)
    if not torch.cuda.is_available():
        with pytest.raises(ResourceError, match="CUDA is not available"):
            check_device("cuda:1", None)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs_and_stays_close(ws: Path, plain: dict, dtype: str) -> None:
    half = compare(str(ws / "teacher"), str(ws / "student"), [str(ws / "words.jsonl")], OPTIONS, dtype=dtype)
    effects, reference = _effects(half), _effects(plain)
    assert np.all(np.isfinite(effects))
    assert np.abs(effects - reference).max() < 5e-3  # tiny random models: effects ~1e-4, half-precision rounding ~1e-3


def test_device_map_auto_equals_plain(ws: Path, plain: dict) -> None:
    pytest.importorskip("accelerate")
    mapped = compare(str(ws / "teacher"), str(ws / "student"), [str(ws / "words.jsonl")], OPTIONS, device_map="auto")
    assert json.dumps(_task(mapped), default=str) == json.dumps(_task(plain), default=str)


def test_offloaded_shards_give_the_same_numbers(ws: Path, plain: dict) -> None:
    """Blocks on different 'devices' (one offloaded to disk): accelerate's hooks move weights and
    activations between them, and every patch, recording and prefix reuse must still be exact."""
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from circuitdiff.models.adapters import adapter_class_for
    from circuitdiff.models.loading import LoadedModel

    device_map = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.h.0": "cpu",
                  "transformer.h.1": "disk", "transformer.h.2": "cpu", "transformer.ln_f": "cpu", "lm_head": "cpu"}
    with tempfile.TemporaryDirectory() as offload:
        model = AutoModelForCausalLM.from_pretrained(str(ws / "teacher"), device_map=device_map, offload_folder=offload,
                                                     attn_implementation="eager").eval().requires_grad_(False)
        assert model.transformer.h[1].attn.c_proj.weight.device.type == "meta"  # really offloaded
        teacher = LoadedModel(str(ws / "teacher"), model, AutoTokenizer.from_pretrained(str(ws / "teacher")),
                              adapter_class_for("gpt2")(model))
        sharded = compare(teacher, str(ws / "student"), [str(ws / "words.jsonl")], OPTIONS)
    assert json.dumps(_task(sharded), default=str) == json.dumps(_task(plain), default=str)


def test_small_budget_micro_batches_to_the_same_numbers(ws: Path, plain: dict) -> None:
    from circuitdiff.interventions.exact import rows_per_forward
    from circuitdiff.models.loading import load_model

    teacher = load_model(str(ws / "teacher"))
    budget = 64 << 10
    assert rows_per_forward(teacher.adapter, 8, budget) < 12  # really split into micro-batches
    small = compare(teacher, str(ws / "student"), [str(ws / "words.jsonl")],
                    CompareOptions(n_boot=10, circuits=True, null_model=False, memory_budget=budget))
    np.testing.assert_allclose(_effects(small), _effects(plain), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_effects(small, "student"), _effects(plain, "student"), rtol=1e-4, atol=1e-5)


def test_out_of_memory_retries_with_half_the_budget(ws: Path, plain: dict, monkeypatch) -> None:
    import circuitdiff.compare as cmp

    real, seen = cmp.run_model_on_task, []

    def tight(*args, memory_budget: int, **kwargs):
        seen.append(memory_budget)
        if memory_budget > MIN_BUDGET * 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, memory_budget=memory_budget, **kwargs)

    monkeypatch.setattr(cmp, "run_model_on_task", tight)
    start = MIN_BUDGET * 16
    again = compare(str(ws / "teacher"), str(ws / "student"), [str(ws / "words.jsonl")],
                    CompareOptions(n_boot=10, circuits=True, null_model=False, memory_budget=start))
    assert seen[:3] == [start, start // 2, start // 4]
    np.testing.assert_allclose(_effects(again), _effects(plain), rtol=1e-4, atol=1e-5)


def test_out_of_memory_everywhere_is_a_one_line_error(ws: Path, monkeypatch) -> None:
    import circuitdiff.compare as cmp

    def never(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(cmp, "run_model_on_task", never)
    with pytest.raises(ResourceError, match="out of memory on task"):
        compare(str(ws / "teacher"), str(ws / "student"), [str(ws / "words.jsonl")], OPTIONS)


def test_cli_large_model_flags(ws: Path, tmp_path: Path) -> None:
    base = ["compare", "--teacher", str(ws / "teacher"), "--student", str(ws / "student"), "-t", str(ws / "words.jsonl"),
            "--n-boot", "10", "--no-circuits", "--no-null", "--no-report"]
    code, err = run_cli(base + ["--dtype", "bfloat16", "--max-memory", "64MB", "--out", str(tmp_path / "ok")])
    assert code == 0, err
    assert json.loads((tmp_path / "ok" / "results.json").read_text())["options"]["memory_budget"] == 64 * 10**6
    for bad in (["--dtype", "int4"], ["--max-memory", "plenty"], ["--device-map", "balanced"], ["--device", "tpu9"]):
        out = tmp_path / "bad"
        code, err = run_cli(base + bad + ["--out", str(out)])
        assert assert_clean_outcome(code, err, out), bad
