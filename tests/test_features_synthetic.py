"""Crosscoder on synthetic paired activations with known shared and exclusive dictionaries.

Ground truth: the relative norm and Latent Scaling equal a plain numpy computation (per-latent least
squares), and the trained crosscoder finds the planted exclusive atoms as teacher-only / student-only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circuitdiff.features.activations import Chunk
from circuitdiff.features.analysis import analyse
from circuitdiff.features.crosscoder import CrossCoder
from circuitdiff.features.train import TrainSettings, train_crosscoder

D_T, D_S = 24, 16
N_SHARED, N_T_ONLY, N_S_ONLY = 20, 4, 4


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def synthetic(one_torch_thread):  # noqa: ANN001, ANN201
    """Atoms: shared ones write to both models, exclusive ones to one; codes are sparse and positive."""
    rng = np.random.default_rng(0)
    n_atoms = N_SHARED + N_T_ONLY + N_S_ONLY
    atoms_t = np.zeros((n_atoms, D_T))
    atoms_s = np.zeros((n_atoms, D_S))
    atoms_t[:N_SHARED + N_T_ONLY] = _unit(rng, N_SHARED + N_T_ONLY, D_T)
    atoms_s[:N_SHARED] = _unit(rng, N_SHARED, D_S)
    atoms_s[N_SHARED + N_T_ONLY:] = _unit(rng, N_S_ONLY, D_S)
    n_tokens = 16384
    codes = (rng.random((n_tokens, n_atoms)) < 3 / n_atoms) * rng.exponential(1.0, (n_tokens, n_atoms))
    x_t = codes @ atoms_t + 0.01 * rng.standard_normal((n_tokens, D_T))
    x_s = codes @ atoms_s + 0.01 * rng.standard_normal((n_tokens, D_S))
    chunk = Chunk(torch.tensor(x_t, dtype=torch.float32), torch.tensor(x_s, dtype=torch.float32),
                  torch.zeros((n_tokens, 2), dtype=torch.long))
    torch.manual_seed(0)
    model = CrossCoder(D_T, D_S, n_latents=48, k=3, seed=0)
    train_crosscoder(model, lambda: iter([chunk]), TrainSettings(n_tokens=600 * 256, batch_size=256, lr=1e-2,
                                                                 dead_after_tokens=4096))
    return model, chunk, atoms_t, atoms_s


def test_relative_norm_and_latent_scaling_match_numpy(synthetic) -> None:  # noqa: ANN001
    model, chunk, _, _ = synthetic
    table = analyse(model, [chunk])
    with torch.no_grad():
        f = model.encode(chunk.teacher, chunk.student).double().numpy()
        r_t, r_s = (r.double().numpy() for r in model.decode(torch.tensor(f, dtype=torch.float32)))
    dec = [model.dec_t.detach().double().numpy(), model.dec_s.detach().double().numpy()]
    bias = [model.b_t.detach().double().numpy(), model.b_s.detach().double().numpy()]
    x = [chunk.teacher.double().numpy(), chunk.student.double().numpy()]
    err = [x[0] - r_t, x[1] - r_s]
    n_t, n_s = np.linalg.norm(dec[0], axis=1), np.linalg.norm(dec[1], axis=1)
    np.testing.assert_allclose(table.relative_norm, n_s / (n_t + n_s), rtol=1e-9)
    live = np.flatnonzero((f > 0).any(0))
    assert len(live) > 20
    for j in live:
        fj = f[:, j:j + 1]
        fit = lambda y: np.linalg.norm(np.linalg.lstsq(fj, y, rcond=None)[0])  # noqa: E731  free direction
        e = [fit(err[m] + fj * dec[m][j]) for m in range(2)]
        r = [fit(x[m] - bias[m]) for m in range(2)]
        own, other = (1, 0) if table.relative_norm[j] > 0.5 else (0, 1)
        assert table.nu_error[j] == pytest.approx(e[other] / e[own], rel=1e-4, abs=1e-6)
        assert table.nu_recon[j] == pytest.approx(r[other] / r[own], rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(table.frequency, (f > 0).mean(0))
    assert table.l0 == pytest.approx((f > 0).sum(1).mean())


def test_planted_exclusive_atoms_are_found(synthetic) -> None:  # noqa: ANN001
    model, chunk, atoms_t, atoms_s = synthetic
    table = analyse(model, [chunk])
    assert table.fve["teacher"] > 0.9 and table.fve["student"] > 0.9
    dec_t = model.dec_t.detach().numpy()
    dec_s = model.dec_s.detach().numpy()
    cos = lambda d, a: (d @ a.T) / np.linalg.norm(d, axis=1, keepdims=True).clip(1e-12)  # noqa: E731
    ct, cs = cos(dec_t, atoms_t), cos(dec_s, atoms_s)
    for a in range(N_SHARED, N_SHARED + N_T_ONLY):  # each teacher-only atom: its best latent is teacher_only
        j = int(np.argmax(ct[:, a]))
        assert ct[j, a] > 0.9 and table.cls[j] == "teacher_only", (a, ct[j, a], table.cls[j])
    for a in range(N_SHARED + N_T_ONLY, len(atoms_s)):
        j = int(np.argmax(cs[:, a]))
        assert cs[j, a] > 0.9 and table.cls[j] == "student_only", (a, cs[j, a], table.cls[j])
    for a in range(N_SHARED):  # shared atoms: their best latents are shared
        j = int(np.argmax(ct[:, a]))
        if ct[j, a] > 0.9:
            assert table.cls[j] == "shared", (a, table.cls[j], table.relative_norm[j])
    exclusive = np.isin(table.cls, ["teacher_only", "student_only"])
    assert exclusive.sum() <= 2 * (N_T_ONLY + N_S_ONLY)
