"""What each latent is: relative decoder norm, Latent Scaling, class, frequency, top contexts; and FVE and L0.

Latent Scaling (Minder et al. 2025) asks how much of each model's activation a latent's firing pattern
explains. For latent j and model m, fit ``v = argmin sum_i |y_i - f_ij v|^2`` with ``y_i`` the model's
reconstruction error plus the latent's own contribution, ``e_i + f_ij d_j^m`` (the "error" target; the
"reconstruction" target is ``x_i - b_m``). Minder et al. fit a scalar along the chat decoder because both of
their models share a basis; a teacher and a student need not (different widths, or a student trained from
scratch), so here ``v`` is a free direction in each model's own space and the fit's size ``|v|`` is compared:
``nu = |v_other| / |v_own|``. A latent whose direction the other model does hold but the crosscoder put on
one decoder only (complete shrinkage) has a large ``nu``; a real exclusive latent has ``nu`` near 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from circuitdiff.features.activations import Chunk
from circuitdiff.features.crosscoder import CrossCoder

EXCLUSIVE_RATIO = 0.2
"""A latent is a candidate for exclusivity when one decoder's norm is at most a fifth of the other's: Minder et
al.'s cut (their Delta-norm <= 0.1 or >= 0.9), i.e. relative norm <= 1/6 (teacher) or >= 5/6 (student)."""
EXCLUSIVE_NORM = EXCLUSIVE_RATIO / (1 + EXCLUSIVE_RATIO)
NU_MAX = 0.5
"""Latent Scaling confirms exclusivity when the other model's fit is under half the own model's (both targets)."""
N_CONTEXTS = 6

CLASSES = ("shared", "teacher_only", "student_only", "dead")


@dataclass
class Accumulator:
    """Sums over the analysis tokens: everything below is computed from them in one pass."""

    n_latents: int
    d_t: int
    d_s: int
    tokens: int = 0
    active: np.ndarray = field(init=False)
    sum_f2: np.ndarray = field(init=False)
    sse: np.ndarray = field(init=False)
    sum_x: list[np.ndarray] = field(init=False)
    sum_x2: np.ndarray = field(init=False)
    fit_error: list[np.ndarray] = field(init=False)
    fit_recon: list[np.ndarray] = field(init=False)
    top_values: np.ndarray = field(init=False)
    top_where: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = self.n_latents
        self.active, self.sum_f2, self.sse, self.sum_x2 = np.zeros(n), np.zeros(n), np.zeros(2), np.zeros(2)
        self.sum_x = [np.zeros(self.d_t), np.zeros(self.d_s)]
        self.fit_error = [np.zeros((n, self.d_t)), np.zeros((n, self.d_s))]
        self.fit_recon = [np.zeros((n, self.d_t)), np.zeros((n, self.d_s))]
        self.top_values = np.zeros((n, N_CONTEXTS))
        self.top_where = np.full((n, N_CONTEXTS, 2), -1, dtype=np.int64)

    def add(self, model: CrossCoder, chunk: Chunk) -> None:
        with torch.no_grad():
            x = (chunk.teacher, chunk.student)
            f = model.encode(*x)
            recon = model.decode(f)
            fd = f.double()
            self.tokens += len(f)
            self.active += (f > 0).sum(0).double().cpu().numpy()
            self.sum_f2 += fd.square().sum(0).cpu().numpy()
            for m, (xm, rm, bias) in enumerate(zip(x, recon, (model.b_t, model.b_s), strict=True)):
                err = (xm - rm).double()
                self.sse[m] += float(err.square().sum())
                self.sum_x[m] += xm.double().sum(0).cpu().numpy()
                self.sum_x2[m] += float(xm.double().square().sum())
                self.fit_error[m] += (fd.T @ err).cpu().numpy()
                self.fit_recon[m] += (fd.T @ (xm - bias).double()).cpu().numpy()
            self._top(f, chunk.where)

    def _top(self, f: torch.Tensor, where: torch.Tensor) -> None:
        k = min(N_CONTEXTS, len(f))
        vals, idx = f.T.topk(k, dim=1)
        cand_v = np.concatenate([self.top_values, vals.double().cpu().numpy()], axis=1)
        cand_w = np.concatenate([self.top_where, where.cpu().numpy()[idx.cpu().numpy()]], axis=1)
        order = np.argsort(-cand_v, axis=1, kind="stable")[:, :N_CONTEXTS]
        self.top_values = np.take_along_axis(cand_v, order, 1)
        self.top_where = np.take_along_axis(cand_w, order[..., None], 1)


def latent_scaling_norms(sum_f2: np.ndarray, f_dot_target: np.ndarray, decoder: np.ndarray | None) -> np.ndarray:
    """|v_j| of the free-direction fit: v_j = (sum_i f_ij t_i) / sum_i f_ij^2, where t_i = target_i and, when
    ``decoder`` is given (the error target), the latent's own contribution f_ij d_j is added back to the error."""
    num = f_dot_target + (sum_f2[:, None] * decoder if decoder is not None else 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = num / sum_f2[:, None]
    return np.where(sum_f2 > 0, np.linalg.norm(np.nan_to_num(v), axis=1), np.nan)


def relative_norm(dec_t: np.ndarray, dec_s: np.ndarray) -> np.ndarray:
    """|d_s| / (|d_t| + |d_s|): 0 = only the teacher's decoder, 1 = only the student's."""
    n_t, n_s = np.linalg.norm(dec_t, axis=1), np.linalg.norm(dec_s, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_t + n_s > 0, n_s / (n_t + n_s), 0.5)


def classify(rel: np.ndarray, nu_error: np.ndarray, nu_recon: np.ndarray, frequency: np.ndarray) -> np.ndarray:
    """shared / teacher_only / student_only / dead: exclusive needs the norm AND Latent Scaling to agree."""
    confirmed = (nu_error < NU_MAX) & (nu_recon < NU_MAX)
    out = np.full(len(rel), "shared", dtype=object)
    out[(rel <= EXCLUSIVE_NORM) & confirmed] = "teacher_only"
    out[(rel >= 1 - EXCLUSIVE_NORM) & confirmed] = "student_only"
    out[frequency <= 0] = "dead"
    return out


@dataclass
class LatentTable:
    """Per-latent results, each an array of length n_latents; plus the dictionary's quality."""

    relative_norm: np.ndarray
    cls: np.ndarray
    frequency: np.ndarray
    nu_error: np.ndarray
    nu_recon: np.ndarray
    decoder_cosine: np.ndarray
    norm_teacher: np.ndarray
    norm_student: np.ndarray
    fve: dict[str, float]
    l0: float
    top_values: np.ndarray
    top_where: np.ndarray
    tokens: int


def analyse(model: CrossCoder, chunks: Iterable[Chunk]) -> LatentTable:
    """One pass over normalised analysis chunks (not the training tokens' order; any tokens will do)."""
    acc = Accumulator(model.n_latents, model.dec_t.shape[1], model.dec_s.shape[1])
    for chunk in chunks:
        acc.add(model, chunk)
    if acc.tokens == 0:
        raise ValueError("no analysis tokens")
    dec = [model.dec_t.detach().double().cpu().numpy(), model.dec_s.detach().double().cpu().numpy()]
    rel = relative_norm(*dec)
    fve = {}
    for m, name in enumerate(("teacher", "student")):
        sst = acc.sum_x2[m] - float(np.square(acc.sum_x[m]).sum()) / acc.tokens
        fve[name] = float(1 - acc.sse[m] / sst) if sst > 0 else float("nan")
    err = [latent_scaling_norms(acc.sum_f2, acc.fit_error[m], dec[m]) for m in range(2)]
    rec = [latent_scaling_norms(acc.sum_f2, acc.fit_recon[m], None) for m in range(2)]
    own_is_student = rel > 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        nu_e = np.where(own_is_student, err[0] / err[1], err[1] / err[0])
        nu_r = np.where(own_is_student, rec[0] / rec[1], rec[1] / rec[0])
    freq = acc.active / acc.tokens
    n_t, n_s = np.linalg.norm(dec[0], axis=1), np.linalg.norm(dec[1], axis=1)
    cos = np.full(len(rel), np.nan)
    if dec[0].shape[1] == dec[1].shape[1]:  # only defined in a common space (not claimed to be a common basis)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = (dec[0] * dec[1]).sum(1) / (n_t * n_s)
    return LatentTable(rel, classify(rel, nu_e, nu_r, freq), freq, nu_e, nu_r, cos, n_t, n_s, fve,
                       float(acc.active.sum() / acc.tokens), acc.top_values, acc.top_where, acc.tokens)
