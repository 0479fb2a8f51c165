"""``compare --edges``: edges.parquet and results.json from the main job, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
import transformers as T

from circuitdiff.analysis.edges import EDGE_COLUMNS
from circuitdiff.compare import CompareOptions, compare
from test_cli import assert_one_line_error, cli


@pytest.fixture(scope="module")
def pair(tmp_path_factory, gpt2_tokenizer) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("edge-pair")
    for name, layers in (("teacher", 2), ("student", 1)):
        torch.manual_seed(layers)
        cfg = T.GPT2Config(n_layer=layers, n_head=2, n_embd=16, vocab_size=len(gpt2_tokenizer), n_positions=128,
                           initializer_range=0.3)
        T.GPT2LMHeadModel(cfg).save_pretrained(root / name)
        gpt2_tokenizer.save_pretrained(root / name)
    return root / "teacher", root / "student"


def test_compare_with_exact_edges_writes_every_method_and_agrees_with_node_effects(pair, tmp_path) -> None:
    teacher, student = pair
    out = tmp_path / "out"
    options = CompareOptions(n_prompts=8, n_boot=20, circuits=False, null_model=False, edges="exact")
    bars: dict[str, list[float]] = {}

    def start(description: str, total: float):  # noqa: ANN202  (a progress factory recording every event)
        bars[description] = [total]
        return bars[description].append

    results = compare(str(teacher), str(student), ["ioi"], options, out=out, resume=False, progress=start)
    edges = pd.read_parquet(out / "edges.parquet")
    for role in ("teacher", "student"):  # exact edge patching has its own bar, advanced once per edge in all
        total, *advances = bars[f"ioi: {role}, exact edges"]
        assert total == len(edges[(edges.model == role) & (edges.method == "exact")]) > 0
        assert sum(advances) == pytest.approx(total)
    assert list(edges.columns) == EDGE_COLUMNS
    assert set(edges["method"]) == {"exact", "eap", "eap-ig"}
    assert set(edges["model"]) == {"teacher", "student"}
    entry = results["tasks"]["ioi"]
    for role, layers in (("teacher", 2), ("student", 1)):
        summary = entry[role]["edges"]
        assert set(summary["spearman_vs_exact"]) == {"eap", "eap-ig"}
        # agreement where it matters, recomputed here from edges.parquet with scipy/numpy
        rows = edges[edges.model == role].pivot_table(index=["sender", "receiver", "channel"], columns="method",
                                                      values="effect")
        for method in ("eap", "eap-ig"):
            found, exact, estimate = summary["agreement_vs_exact"][method], rows["exact"].values, rows[method].values
            top = np.argsort(-np.abs(exact))[:found["top_k"]]
            assert found["top_k"] == min(30, len(exact)) and found["n"] == len(exact)
            assert found["spearman"] == pytest.approx(summary["spearman_vs_exact"][method])
            assert found["top_k_spearman"] == pytest.approx(spearmanr(exact[top], estimate[top]).statistic)
            cov = np.cov(exact, estimate, aweights=np.abs(exact))
            assert found["weighted_correlation"] == pytest.approx(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]))
        # 2 heads x (q, k, v) + 1 MLP input per later layer, the same-layer MLP for heads, the logits for all
        n_components = layers * 3
        assert summary["n_edges"] == len(edges[(edges.model == role) & (edges.method == "exact")])
        assert summary["n_edges"] >= n_components  # every component at least reaches the logits
        # the last MLP is read only by the logits: its edge effect is its node effect
        last = f"L{layers - 1}.MLP"
        node = next(c["effect"] for c in entry[role]["components"] if c["name"] == last)
        edge = edges[(edges.model == role) & (edges.method == "exact") & (edges.sender == last)]
        assert list(edge["receiver"]) == ["logits"]
        assert edge["effect"].iloc[0] == pytest.approx(node, abs=1e-5, rel=1e-4)
    assert json.loads((out / "results.json").read_text())["options"]["edges"] == "exact"
    assert entry["edge_circuits"] == []  # random models: clean logit difference too close to 0 for circuits


def test_builtin_pair_edge_circuits_are_run_and_compared(tmp_path) -> None:
    options = CompareOptions(n_prompts=8, n_boot=20, circuits=False, null_model=False, edges="eap-ig")
    results = compare("tiny-gpt2", "tiny-distilgpt2", ["ioi"], options, out=tmp_path, resume=False)
    entry = results["tasks"]["ioi"]
    assert set(pd.read_parquet(tmp_path / "edges.parquet")["method"]) == {"eap-ig"}
    assert {(c["rule"], c["parameter"]) for c in entry["edge_circuits"]} == {("top-k", 20.0), ("threshold", 0.05)}
    for comparison in entry["edge_circuits"]:
        for role in ("teacher", "student"):
            circuit = comparison[role]
            assert circuit["size"] > 0 and np.isfinite(circuit["faithfulness"]) and np.isfinite(circuit["completeness"])
        assert 0.0 <= comparison["overlap_jaccard"] <= 1.0
        merged = [tuple(t) for m in comparison["merged"] for t in m["teacher"]]
        teacher_classes = [tuple(e) for e in comparison["kept"] + comparison["dropped"]] + merged
        assert len(teacher_classes) == len(set(teacher_classes)) == comparison["teacher"]["size"]


def test_compare_without_edges_writes_no_edge_table(pair, tmp_path) -> None:
    teacher, student = pair
    options = CompareOptions(n_prompts=8, n_boot=20, circuits=False, null_model=False)
    results = compare(str(teacher), str(student), ["ioi"], options, out=tmp_path, resume=False)
    assert not (tmp_path / "edges.parquet").exists()
    assert "edges" not in results["tasks"]["ioi"]["teacher"]


def test_cli_refuses_edges_for_post_layernorm_models_and_unknown_methods(tmp_path) -> None:
    proc = cli("compare", "--pair", "tiny-bert", "--edges", "eap", "--n-prompts", "8", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert_one_line_error(proc, "post-LayerNorm")
    proc = cli("compare", "--edges", "acdc", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert_one_line_error(proc, "unknown edge method 'acdc'")
