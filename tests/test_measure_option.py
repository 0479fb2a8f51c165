"""A registered measure is selectable (options, CLI) and drives matching, alignment, results and report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from circuitdiff.analysis.calibration import ResampledSimilarity
from circuitdiff.analysis.measures import get_measure, register
from circuitdiff.analysis.measures.linear_cka import LinearCKA
from circuitdiff.options import CompareOptions, OptionsError
from tiny_models import save_gpt2_pair


@register
@dataclass(frozen=True)
class CopyOfLinearCKA(LinearCKA):
    """Linear CKA under another name: every number must equal the default's."""

    name: ClassVar[str] = "test_copy_of_linear_cka"


@register
@dataclass(frozen=True)
class UnweightedLinearCKA(LinearCKA):
    """Linear CKA that declares no prompt weights: the interval must take the distinct-prompts fallback."""

    name: ClassVar[str] = "test_unweighted_cka"
    prompt_weights: ClassVar[bool] = False


def reference_debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC, written out here, independent of circuitdiff.analysis.cka."""
    def hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
        n = len(k)
        k, l = k.copy(), l.copy()
        np.fill_diagonal(k, 0.0)
        np.fill_diagonal(l, 0.0)
        one = np.ones(n)
        return float(np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
                     - 2.0 * (one @ k @ l @ one) / (n - 2)) / (n * (n - 3))
    kx, ky = x @ x.T, y @ y.T
    return hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky))


def test_options_accept_registered_measures_and_name_the_choices() -> None:
    assert CompareOptions().measure == "linear_cka"
    assert CompareOptions(measure="test_copy_of_linear_cka").measure == "test_copy_of_linear_cka"
    with pytest.raises(OptionsError, match="unknown similarity measure 'nope'; choose one of linear_cka"):
        CompareOptions(measure="nope")


def test_resampled_similarity_weighted_and_fallback_match_a_reference() -> None:
    rng = np.random.default_rng(0)
    teacher = {"a": rng.normal(size=(12, 3)), "b": rng.normal(size=(12, 4))}
    student = {"x": teacher["a"] @ rng.normal(size=(3, 5)) + 0.3 * rng.normal(size=(12, 5)),
               "y": rng.normal(size=(12, 2))}
    ones = np.ones(12)
    expected = np.array([[reference_debiased_cka(t, s) for s in student.values()] for t in teacher.values()])
    weighted = ResampledSimilarity(get_measure("linear_cka"), teacher, student)
    fallback = ResampledSimilarity(get_measure("test_unweighted_cka"), teacher, student)
    assert (weighted.method, fallback.method) == ("weighted", "distinct_prompts")
    np.testing.assert_allclose(weighted(ones), expected, atol=1e-10)
    np.testing.assert_allclose(fallback(ones), expected, atol=1e-10)
    w = np.bincount(rng.integers(0, 12, size=12), minlength=12).astype(float)
    rows = np.flatnonzero(w > 0)  # the fallback: CKA on the distinct prompts drawn, duplicates dropped
    distinct = np.array([[reference_debiased_cka(t[rows], s[rows]) for s in student.values()] for t in teacher.values()])
    np.testing.assert_allclose(fallback(w), distinct, atol=1e-10)
    assert not np.allclose(weighted(w), distinct, atol=1e-6)  # the weighted estimator counts duplicates


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, gpt2_tokenizer_dir: Path) -> dict[str, Path]:

    tmp = tmp_path_factory.mktemp("measure-models")
    paths = save_gpt2_pair(tmp, gpt2_tokenizer_dir)
    return paths


def run(model_dirs: dict[str, Path], out: Path, measure: str) -> dict:
    from circuitdiff.compare import compare

    options = CompareOptions(n_prompts=10, n_boot=30, n_null=2, circuits=False, measure=measure)
    compare(str(model_dirs["teacher"]), str(model_dirs["student"]), ("ioi",), options, out, progress=False,
            report=measure != "linear_cka")
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_a_registered_measure_drives_matching_alignment_results_and_report(model_dirs, tmp_path: Path) -> None:
    default = run(model_dirs, tmp_path / "default", "linear_cka")
    copy = run(model_dirs, tmp_path / "copy", "test_copy_of_linear_cka")
    assert copy["options"]["measure"] == "test_copy_of_linear_cka"
    d, c = default["tasks"]["ioi"], copy["tasks"]["ioi"]
    assert c["alignment"]["measure"] == "test_copy_of_linear_cka" and d["alignment"]["measure"] == "linear_cka"
    for key in ("score", "ci", "null", "null_values", "share_above_point"):
        assert c["alignment"][key] == pytest.approx(d["alignment"][key], abs=1e-12), key
    assert c["matching"] == d["matching"] and c["alignment"]["similarity_resampling"] == "weighted"
    sim = pd.read_parquet(tmp_path / "copy" / "similarity.parquet")
    assert set(sim["measure"]) >= {"test_copy_of_linear_cka", "functional", "layer_cka"}
    assert "linear_cka" not in set(sim["measure"])  # the chosen measure replaces the default, not beside it
    html = (tmp_path / "copy" / "report.html").read_text(encoding="utf-8")
    assert "alignment score (test_copy_of_linear_cka)" in html
    assert '<th class="num">test_copy_of_linear_cka</th>' in html  # the flows table names the measure


def test_a_measure_without_prompt_weights_gets_the_labelled_fallback(model_dirs, tmp_path: Path) -> None:
    results = run(model_dirs, tmp_path / "unweighted", "test_unweighted_cka")
    al = results["tasks"]["ioi"]["alignment"]
    assert al["similarity_resampling"] == "distinct_prompts"
    assert [n["task"] for n in results["notes"] if n["code"] == "interval.distinct_prompts"] == ["ioi"]
    lo, hi = al["ci"]
    assert lo is None or lo <= al["score"] <= hi
