"""Crosscoder on synthetic paired activations with known shared and exclusive dictionaries.

Ground truth: the relative norm and Latent Scaling equal a plain numpy computation (per-latent least
squares), the trained crosscoder finds the planted exclusive atoms as teacher-only / student-only, the AuxK
loss equals a per-token numpy computation, and it revives latents that a crippled initialisation kills.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circuitdiff.features.activations import Chunk
from circuitdiff.features.analysis import analyse
from circuitdiff.features.crosscoder import CrossCoder, aux_loss
from circuitdiff.features.train import TrainSettings, train_crosscoder

D_T, D_S = 24, 16
N_SHARED, N_T_ONLY, N_S_ONLY = 20, 4, 4


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _planted() -> tuple[Chunk, np.ndarray, np.ndarray]:
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
    return chunk, atoms_t, atoms_s


@pytest.fixture(scope="module")
def synthetic(one_torch_thread):  # noqa: ANN001, ANN201
    chunk, atoms_t, atoms_s = _planted()
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


def test_aux_loss_matches_numpy(one_torch_thread) -> None:  # noqa: ANN001
    """Per token: the k_aux largest relu pre-activations among dead latents, decoded by both decoders (no bias),
    against the main reconstruction's error; normalised by the error's total square."""
    torch.manual_seed(1)
    model = CrossCoder(D_T, D_S, n_latents=40, k=3, seed=1)
    with torch.no_grad():
        model.b_t.normal_()  # a bias must not enter the aux reconstruction
        model.b_s.normal_()
    x_t, x_s = torch.randn(32, D_T), torch.randn(32, D_S)
    pre, _, r_t, r_s = model(x_t, x_s)
    dead = torch.rand(40) < 0.5
    k_aux = 5
    got = float(aux_loss(model, pre, x_t, x_s, r_t, r_s, dead, k_aux).detach())
    p, d = pre.detach().double().numpy(), dead.numpy()
    dec = [model.dec_t.detach().double().numpy(), model.dec_s.detach().double().numpy()]
    err = [(x_t - r_t).detach().double().numpy(), (x_s - r_s).detach().double().numpy()]
    dead_ids = np.flatnonzero(d)
    num = 0.0
    for i in range(len(p)):
        chosen = dead_ids[np.argsort(-p[i, dead_ids], kind="stable")[:k_aux]]
        for m in range(2):
            num += float(np.sum((p[i, chosen] @ dec[m][chosen] - err[m][i]) ** 2))
    want = num / (np.sum(err[0] ** 2) + np.sum(err[1] ** 2))
    assert got == pytest.approx(want, rel=1e-5)
    loss = aux_loss(model, pre, x_t, x_s, r_t, r_s, dead, k_aux)
    loss.backward()
    live_rows = model.dec_t.grad[~dead].abs().sum() + model.dec_s.grad[~dead].abs().sum()
    assert float(live_rows) == 0.0 and float(model.dec_t.grad[dead].abs().sum()) > 0  # only dead latents learn
    assert float(aux_loss(model, pre, x_t, x_s, r_t, r_s, torch.zeros(40, dtype=torch.bool), k_aux)) == 0.0


def test_auxk_revives_latents_a_crippled_init_killed(one_torch_thread) -> None:  # noqa: ANN001
    """24 latents for 28 atoms, half of them started with decoders 1e-3 of the others': their BatchTopK scores
    never make the top-k, so without AuxK they get no gradient and all stay dead (and the dictionary is worse);
    AuxK trains them on the error and they fire again."""
    chunk, _, _ = _planted()
    n, crippled = 24, torch.arange(12, 24)
    dead, fve = {}, {}
    for coefficient in (0.0, 1 / 32):
        torch.manual_seed(0)
        model = CrossCoder(D_T, D_S, n_latents=n, k=3, seed=0)
        with torch.no_grad():
            model.dec_t[crippled] *= 1e-3
            model.dec_s[crippled] *= 1e-3
        settings = TrainSettings(n_tokens=200 * 256, batch_size=256, lr=1e-2, dead_after_tokens=2048,
                                 aux_coefficient=coefficient)
        train_crosscoder(model, lambda: iter([chunk]), settings)
        with torch.no_grad():
            f = model.encode(chunk.teacher, chunk.student)
            r_t, _ = model.decode(f)
        dead[coefficient] = set((f == 0).all(0).nonzero().flatten().tolist())
        x = chunk.teacher.double()
        fve[coefficient] = 1 - float((r_t.double() - x).square().sum() / (x - x.mean(0)).square().sum())
    assert dead[0.0] == set(crippled.tolist())  # without AuxK exactly the crippled latents stay dead
    assert len(dead[1 / 32]) <= 2, dead[1 / 32]
    assert fve[1 / 32] > fve[0.0] + 0.1, fve


def test_a_dictionary_that_rebuilds_too_little_is_flagged_not_read() -> None:
    from circuitdiff.features.results import MIN_FVE, reconstruction_problem

    assert reconstruction_problem({"teacher": 0.95, "student": MIN_FVE}) is None
    for fve in ({"teacher": -0.33, "student": 0.9}, {"teacher": 0.9, "student": float("nan")}):
        why = reconstruction_problem(fve)
        assert why is not None and "not findings" in why and "--lr" in why
    assert "teacher -0.33" in reconstruction_problem({"teacher": -0.33, "student": 0.9})


def test_the_default_learning_rate_falls_with_the_stream_width_above_128() -> None:
    from circuitdiff.features.train import TrainSettings, default_lr

    assert default_lr(64) == default_lr(128) == TrainSettings.lr  # the shipped pairs' streams: as measured
    assert default_lr(576) == pytest.approx(TrainSettings.lr * 128 / 576)  # SmolLM2: 4.4e-4, near the 5e-4 that trained
    assert default_lr(4096) < default_lr(576)
