"""A BatchTopK crosscoder over two models' activations at one site each (Lindsey et al. 2024; Minder et al. 2025).

One shared latent code ``f`` is read from both models' (normalised) activations and each model has its own
decoder, so the two widths may differ. ``f`` keeps, over a whole batch, the ``k * batch`` largest values of
``relu(pre) * (|d_t| + |d_s|)`` (BatchTopK): no L1 penalty, so no shrinkage towards one decoder, which is
what makes L1 crosscoders invent exclusive latents. At evaluation a single threshold learnt during training
(the running mean of the smallest kept score) replaces the batch-dependent top-k, so a token's code does not
depend on the other tokens of its batch.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossCoder(nn.Module):
    """Encoders ``(d_t + d_s) -> n`` and one decoder per model ``n -> d_m``; ``k`` active latents per token."""

    def __init__(self, d_teacher: int, d_student: int, n_latents: int, k: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.k, self.n_latents = k, n_latents
        dec_t = torch.randn(n_latents, d_teacher, generator=gen)
        dec_s = torch.randn(n_latents, d_student, generator=gen)
        scale = (dec_t.square().sum(1) + dec_s.square().sum(1)).sqrt().unsqueeze(1) * 10.0
        dec_t, dec_s = dec_t / scale, dec_s / scale  # each latent's joint decoder norm 0.1, equal per model
        self.dec_t = nn.Parameter(dec_t)
        self.dec_s = nn.Parameter(dec_s)
        self.enc_t = nn.Parameter(dec_t.T.clone())  # tied initialisation (Conerly et al. 2024)
        self.enc_s = nn.Parameter(dec_s.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_t = nn.Parameter(torch.zeros(d_teacher))
        self.b_s = nn.Parameter(torch.zeros(d_student))
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not learnt yet (then top-k is used)

    def decoder_norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-latent decoder norms (teacher, student), each (n_latents,)."""
        return self.dec_t.norm(dim=1), self.dec_s.norm(dim=1)

    def pre(self, x_t: torch.Tensor, x_s: torch.Tensor) -> torch.Tensor:
        """relu of the joint encoder's pre-activation, (tokens, n_latents)."""
        return torch.relu(x_t @ self.enc_t + x_s @ self.enc_s + self.b_enc)

    def select(self, pre: torch.Tensor, batch_topk: bool | None = None) -> torch.Tensor:
        """Keep the active latents of ``pre``: BatchTopK in training (or before a threshold exists), the learnt
        threshold otherwise. Both compare ``pre`` weighted by the summed decoder norms."""
        n_t, n_s = self.decoder_norms()
        score = pre * (n_t + n_s)
        use_topk = (self.training or float(self.threshold) < 0) if batch_topk is None else batch_topk
        if not use_topk:
            return pre * (score > self.threshold)
        flat = score.flatten()
        top = flat.topk(min(flat.numel(), self.k * score.shape[0]), sorted=False)
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[top.indices] = True
        if self.training:
            kept = top.values[top.values > 0]
            if kept.numel():
                self._update_threshold(kept.min().detach())
        return pre * (mask.view_as(score) & (score > 0))

    def encode(self, x_t: torch.Tensor, x_s: torch.Tensor, batch_topk: bool | None = None) -> torch.Tensor:
        """Latent activations (tokens, n_latents)."""
        return self.select(self.pre(x_t, x_s), batch_topk)

    @torch.no_grad()
    def calibrate_threshold(self, x_t: torch.Tensor, x_s: torch.Tensor) -> None:
        """Set the threshold so that these tokens have ``k`` active latents on average, as BatchTopK over all
        of them would: the smallest kept score. (The running mean of training's short batches lags.)"""
        n_t, n_s = self.decoder_norms()
        score = (self.pre(x_t, x_s) * (n_t + n_s)).flatten()
        kept = score.topk(min(score.numel(), self.k * len(x_t)), sorted=False).values
        kept = kept[kept > 0]
        if kept.numel():
            self.threshold.copy_(kept.min())

    @torch.no_grad()
    def _update_threshold(self, smallest: torch.Tensor, momentum: float = 0.99) -> None:
        t = self.threshold
        t.copy_(smallest if float(t) < 0 else momentum * t + (1 - momentum) * smallest)

    def decode(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return f @ self.dec_t + self.b_t, f @ self.dec_s + self.b_s

    def forward(self, x_t: torch.Tensor, x_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pre-activations, latent activations, teacher reconstruction, student reconstruction)."""
        pre = self.pre(x_t, x_s)
        f = self.select(pre)
        r_t, r_s = self.decode(f)
        return pre, f, r_t, r_s


def aux_loss(model: CrossCoder, pre: torch.Tensor, x_t: torch.Tensor, x_s: torch.Tensor, r_t: torch.Tensor,
             r_s: torch.Tensor, dead: torch.Tensor, k_aux: int) -> torch.Tensor:
    """AuxK (Gao et al. 2024; Bussmann et al. 2024 use it for BatchTopK): each token's ``k_aux`` largest relu
    pre-activations ``pre`` among the ``dead`` latents, decoded by both decoders without the bias, model the main
    reconstruction's error in each model. It is the only gradient a dead latent gets, and it revives it.

    Returns ``sum_tokens (|a_t - e_t|^2 + |a_s - e_s|^2) / sum_tokens (|e_t|^2 + |e_s|^2)`` with ``e = x - r``
    detached, so the term is scale-free (1 when the dead latents explain nothing); 0 when none is dead. The relu
    is kept as in Gao et al.'s and dictionary_learning's code (SAELens drops it and scales by min(n_dead / k_aux, 1):
    on the GPT-2 pair's activations at k_aux 128 that left 449 of 1,024 latents dead instead of 188)."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return x_t.new_zeros(())
    top = pre.masked_fill(~dead, -1.0).topk(min(k_aux, n_dead), dim=1)  # pre >= 0, so dead ones come first
    codes = torch.zeros_like(pre).scatter(1, top.indices, top.values)  # dense: one matmul per decoder
    e_t, e_s = (x_t - r_t).detach(), (x_s - r_s).detach()
    a_t, a_s = codes @ model.dec_t, codes @ model.dec_s
    denom = e_t.square().sum() + e_s.square().sum()
    return ((a_t - e_t).square().sum() + (a_s - e_s).square().sum()) / denom.clamp_min(1e-12)
