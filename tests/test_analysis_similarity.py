"""Similarity measures: invariances, the debiased-vs-biased contrast, dead components, bulk = pairwise."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.stats import ortho_group

from circuitdiff.analysis.cka import hsic
from circuitdiff.analysis.similarity import (
    DegenerateRepresentationWarning,
    SimilarityMeasure,
    SmallSampleWarning,
    attention_pattern_similarity,
    functional_similarity,
    is_degenerate,
    linear_cka,
    principal_direction_similarity,
    procrustes_similarity,
    pwcca,
    rbf_cka,
    similarity_matrix,
    svcca,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def related(rng: np.random.Generator, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """X and a noisy partial copy Y: similarity strictly between 0 and 1."""
    x = rng.normal(size=(n, 20))
    y = np.hstack([x[:, :6] + 0.5 * rng.normal(size=(n, 6)), rng.normal(size=(n, 4))])
    return x, y


def test_linear_cka_identical_is_one(rng: np.random.Generator) -> None:
    x = rng.normal(size=(64, 30))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x, debiased=False) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [True, False])
def test_linear_cka_invariant_to_rotation_and_isotropic_scaling(rng: np.random.Generator, debiased: bool) -> None:
    x, y = related(rng)
    base = linear_cka(x, y, debiased)
    assert 0.1 < base < 0.9
    qx, qy = ortho_group.rvs(20, random_state=1), ortho_group.rvs(10, random_state=2)
    assert linear_cka(x @ qx, y, debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, y @ qy, debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y, debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x + 3.0, y, debiased) == pytest.approx(base, abs=1e-10)
    # not invariant to anisotropic scaling: a real check, not a constant
    assert linear_cka(x * np.linspace(0.1, 10, 20), y, debiased) != pytest.approx(base, abs=1e-3)


def test_debiased_cka_near_zero_on_independent_data_biased_is_not(rng: np.random.Generator) -> None:
    deb, bia = [], []
    for _ in range(20):
        x, y = rng.normal(size=(64, 64)), rng.normal(size=(64, 48))
        deb.append(linear_cka(x, y))
        bia.append(linear_cka(x, y, debiased=False))
    assert abs(np.mean(deb)) < 0.02
    assert np.median(np.abs(deb)) < 0.05
    assert np.max(np.abs(deb)) < 0.1
    assert min(bia) > 0.3  # the bias the reference field warns about


def test_debiased_hsic_equals_song_estimator(rng: np.random.Generator) -> None:
    n = 12
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(n, 4))
    kx, ky = np.exp(-0.1 * ((x[:, None] - x[None]) ** 2).sum(-1)), y @ y.T
    kt, lt = kx - np.diag(np.diag(kx)), ky - np.diag(np.diag(ky))
    one = np.ones(n)
    song = np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    song = (song - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))
    assert hsic(kx, ky) == pytest.approx(song, rel=1e-10)
    h = np.eye(n) - 1 / n
    assert hsic(kx, ky, debiased=False) == pytest.approx(np.trace(kx @ h @ ky @ h) / (n - 1) ** 2, rel=1e-10)


def test_biased_linear_cka_matches_feature_space_formula(rng: np.random.Generator) -> None:
    x, y = related(rng)
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(x, y, debiased=False) == pytest.approx(expected, rel=1e-10)


def test_rbf_cka(rng: np.random.Generator) -> None:
    x, y = related(rng)
    assert rbf_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    base = rbf_cka(x, y)
    assert 0.05 < base < 0.95
    assert rbf_cka(3.0 * x @ ortho_group.rvs(20, random_state=3), y) == pytest.approx(base, abs=1e-10)


def test_procrustes(rng: np.random.Generator) -> None:
    x, y = related(rng)
    q = ortho_group.rvs(20, random_state=4)
    assert procrustes_similarity(x, 2.0 * x @ q + 1.0) == pytest.approx(1.0, abs=1e-10)
    assert procrustes_similarity(x, np.hstack([x @ q, np.zeros((64, 5))])) == pytest.approx(1.0, abs=1e-10)
    # against scipy's explicit solution, after zero-padding y to x's width
    xn = (x - x.mean(0)) / np.linalg.norm(x - x.mean(0))
    yn = (y - y.mean(0)) / np.linalg.norm(y - y.mean(0))
    yp = np.hstack([yn, np.zeros((64, 10))])
    r, _ = orthogonal_procrustes(xn, yp)
    expected = 1.0 - np.linalg.norm(xn @ r - yp) ** 2 / 2.0
    assert procrustes_similarity(x, y) == pytest.approx(expected, abs=1e-10)
    assert procrustes_similarity(y, x) == pytest.approx(expected, abs=1e-10)
    assert expected < 0.9


def test_cca_measures_one_under_invertible_map_low_when_unrelated() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, 8))
    m = ortho_group.rvs(8, random_state=6) @ np.diag(np.linspace(1.0, 2.0, 8))
    assert svcca(x, x @ m + 4.0) == pytest.approx(1.0, abs=1e-10)
    assert pwcca(x, x @ m) == pytest.approx(1.0, abs=1e-10)
    z = rng.normal(size=(500, 8))
    assert svcca(x, z) < 0.2
    assert pwcca(x, z) < 0.2


def test_pwcca_weights_come_from_the_narrower_side_so_it_is_symmetric() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(400, 4)) * np.array([5.0, 2.0, 1.0, 0.2])
    y = np.hstack(
        [x[:, :2] + 0.3 * rng.normal(size=(400, 2)), x[:, 3:] + rng.normal(size=(400, 1)), rng.normal(size=(400, 7))]
    )
    value = pwcca(x, y)
    assert value == pytest.approx(pwcca(y, x), abs=1e-12)
    assert value != pytest.approx(svcca(x, y, keep_variance=1.0), abs=0.05)  # weighting matters here


def test_cca_warns_when_prompts_cannot_support_the_width() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(64, 100)), rng.normal(size=(64, 100))
    with pytest.warns(SmallSampleWarning):
        assert pwcca(x, y) == pytest.approx(1.0)  # unrelated, yet 1: why the warning exists


PAIRWISE = [
    linear_cka,
    rbf_cka,
    svcca,
    pwcca,
    procrustes_similarity,
    principal_direction_similarity,
    functional_similarity,
]


@pytest.mark.parametrize("fn", PAIRWISE)
def test_dead_component_gives_zero_not_nan(fn: Callable[..., float], rng: np.random.Generator) -> None:
    x = rng.normal(size=(64, 8))
    dead = np.full((64, 8), 3.25)
    if fn is functional_similarity:  # per-prompt effect vectors
        x, dead = x[:, 0], dead[:, 0]
    assert is_degenerate(dead) and is_degenerate(np.zeros((64, 8))) and not is_degenerate(x)
    with pytest.warns(DegenerateRepresentationWarning):
        assert fn(dead, x) == 0.0
    with pytest.warns(DegenerateRepresentationWarning):
        assert fn(x, dead) == 0.0


def test_attention_functional_and_principal_similarity(rng: np.random.Generator) -> None:
    a = rng.dirichlet(np.ones(6), size=(10, 6))  # (batch, q, k)
    b = rng.dirichlet(np.ones(6), size=(10, 6))
    assert attention_pattern_similarity(a, a) == pytest.approx(1.0)
    ma, mb = a.mean(0).ravel(), b.mean(0).ravel()
    expected = ma @ mb / (np.linalg.norm(ma) * np.linalg.norm(mb))
    assert attention_pattern_similarity(a, b) == pytest.approx(expected)
    assert attention_pattern_similarity(a.mean(0), b) == pytest.approx(expected)
    with pytest.raises(ValueError):
        attention_pattern_similarity(a, b[:, :5, :5])
    e = rng.normal(size=40)
    assert functional_similarity(e, 2 * e + 1) == pytest.approx(1.0)
    assert functional_similarity(e, -e) == pytest.approx(-1.0)
    x = rng.normal(size=(64, 10)) * np.arange(10, 0, -1)
    assert principal_direction_similarity(x, -3 * x) == pytest.approx(1.0)
    assert principal_direction_similarity(x, x[:, ::-1]) < 0.5


@pytest.mark.parametrize("measure", list(SimilarityMeasure))
def test_similarity_matrix_equals_pairwise(measure: SimilarityMeasure, rng: np.random.Generator) -> None:
    n = 64
    base = rng.normal(size=(n, 6))
    teacher = {
        "L0.H0": base,
        "L0.H1": rng.normal(size=(n, 6)),
        "L0.MLP": rng.normal(size=(n, 12)),
        "L1.H0": np.zeros((n, 6)),
    }
    student = {"L0.H0": base @ ortho_group.rvs(6, random_state=8), "L0.MLP": rng.normal(size=(n, 9))}
    pairs: dict[SimilarityMeasure, Callable[..., float]] = {
        SimilarityMeasure.LINEAR_CKA: linear_cka,
        SimilarityMeasure.RBF_CKA: rbf_cka,
        SimilarityMeasure.SVCCA: svcca,
        SimilarityMeasure.PWCCA: pwcca,
        SimilarityMeasure.PROCRUSTES: procrustes_similarity,
    }
    pair = pairs[measure]
    with pytest.warns(DegenerateRepresentationWarning):
        sim = similarity_matrix(teacher, student, measure.value)
    assert list(sim.index) == list(teacher) and list(sim.columns) == list(student)
    assert sim.attrs["dead_teacher"] == ["L1.H0"] and sim.attrs["measure"] == measure.value
    assert not sim.isna().any().any()
    assert sim.loc["L0.H0", "L0.H0"] == pytest.approx(1.0, abs=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t, x in teacher.items():
            for s, y in student.items():
                assert sim.loc[t, s] == pytest.approx(pair(x, y), abs=1e-9)


def test_similarity_matrix_custom_function_and_row_check(rng: np.random.Generator) -> None:
    pats = {"L0.H0": rng.dirichlet(np.ones(5), size=(4, 5)), "L0.H1": rng.dirichlet(np.ones(5), size=(4, 5))}
    sim = similarity_matrix(pats, {"L0.H0": pats["L0.H1"]}, attention_pattern_similarity)
    assert sim.loc["L0.H1", "L0.H0"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        similarity_matrix({"a": rng.normal(size=(10, 3))}, {"b": rng.normal(size=(11, 3))})


def test_a_new_measure_is_one_registered_class(rng: np.random.Generator) -> None:
    """A measure registered from anywhere (here: the test) is computed by ``similarity_matrix``, dead rows 0."""
    from dataclasses import dataclass

    from circuitdiff.analysis.measures import PairwiseMeasure, get_measure, measure_names, register

    @register
    @dataclass(frozen=True)
    class MeanCorrelation(PairwiseMeasure):
        name = "test_mean_correlation"
        description = "correlation over prompts of the mean activation"

        def prepare(self, x: np.ndarray) -> np.ndarray:
            return x.mean(axis=1)

        def compare(self, a: np.ndarray, b: np.ndarray) -> float:
            return float(np.corrcoef(a, b)[0, 1])

    teacher = {"A": rng.normal(size=(12, 3)), "B": rng.normal(size=(12, 5)), "dead": np.ones((12, 2))}
    student = {"X": rng.normal(size=(12, 4)), "Y": teacher["A"] * 2.0}
    with pytest.warns(DegenerateRepresentationWarning), np.errstate(invalid="ignore", divide="ignore"):
        sim = similarity_matrix(teacher, student, "test_mean_correlation")
    expected = [[np.corrcoef(t.mean(1), s.mean(1))[0, 1] for s in student.values()] for t in teacher.values()]
    np.testing.assert_allclose(sim.loc[["A", "B"]].to_numpy(), np.array(expected[:2]), rtol=1e-12)
    assert sim.loc["A", "Y"] == pytest.approx(1.0) and (sim.loc["dead"] == 0).all()
    assert sim.attrs["measure"] == "test_mean_correlation" and sim.attrs["dead_teacher"] == ["dead"]
    assert "test_mean_correlation" in measure_names() and {"linear_cka", "pwcca"} <= set(measure_names())
    with pytest.raises(ValueError, match="unknown similarity measure 'nope'; choose one of linear_cka"):
        get_measure("nope")
