"""Train a crosscoder on a stream of paired, normalised activation chunks.

Each chunk is shuffled and cut into minibatches; the stream is read again from the start until the token
budget is spent, so a small corpus is simply seen several times. Memory is one chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from circuitdiff.features.activations import Chunk
from circuitdiff.features.crosscoder import CrossCoder, aux_loss


@dataclass(frozen=True)
class TrainSettings:
    """Training knobs. The token budget and batch size were set by measuring dead latents (docs/features.md): with
    1,024 latents on the GPT-2 pair, 195 steps of 1,024 tokens left 71% dead, 1,562 steps of 256 tokens 28%."""

    n_latents: int = 1024
    k: int = 16
    n_tokens: int = 400_000
    batch_size: int = 256
    lr: float = 2e-3
    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss (Gao et al. 2024's alpha)."""
    dead_after_tokens: int = 20_000
    """A latent that has not fired for this many training tokens counts as dead for the AuxK loss (Gao et al.
    use 10M tokens for far longer runs; here it is 5% of the default budget)."""
    k_aux: int | None = None
    """Dead latents per token in the AuxK loss; None: ``2 * k``. (dictionary_learning and SAELens default to half
    the input width, here 128; on the test pairs that lost the planted and random-student ground truths.)"""
    seed: int = 0

    @property
    def aux_k(self) -> int:
        """The AuxK loss's per-token count of dead latents."""
        return self.k_aux if self.k_aux is not None else 2 * self.k


def default_lr(width: int) -> float:
    """Adam's learning rate for a residual stream this wide: ``TrainSettings.lr`` up to 128 dimensions, falling as
    1/width above. Fit to two measured points: 2e-3 trains the shipped pairs' 128-wide streams, while on
    SmolLM2's 576-wide stream it diverged (FVE -0.33) and 5e-4 trained (FVE 0.78); this gives 4.4e-4 there."""
    return TrainSettings.lr * min(1.0, 128 / max(1, width))


@dataclass
class TrainLog:
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    final_loss: float = float("nan")

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def train_crosscoder(model: CrossCoder, chunks: Callable[[], Iterator[Chunk]], settings: TrainSettings,
                     device: torch.device | str = "cpu", progress: Callable[[int], None] | None = None) -> TrainLog:
    """Train ``model`` in place on normalised chunks until ``settings.n_tokens`` tokens were seen.

    ``chunks`` is called once per pass over the data and yields normalised ``Chunk``s. The learning rate
    decays linearly over the last fifth of training; the decoder gets no norm constraint (its norms are
    what the relative norm compares).
    """
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, betas=(0.9, 0.999))
    total_steps = max(1, settings.n_tokens // settings.batch_size)
    decay_from = int(0.8 * total_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if s < decay_from else max(0.0, (total_steps - s) / max(1, total_steps - decay_from)))
    since_fired = torch.zeros(model.n_latents, dtype=torch.long, device=device)
    gen = torch.Generator().manual_seed(settings.seed)
    log, start = TrainLog(), time.perf_counter()
    last: tuple[torch.Tensor, torch.Tensor] | None = None
    while log.steps < total_steps:
        seen_any = False
        for chunk in chunks():
            seen_any = True
            order = torch.randperm(len(chunk.where), generator=gen)
            size = min(settings.batch_size, len(order))  # a chunk smaller than a batch is one batch
            for lo in range(0, len(order) - size + 1, size):
                idx = order[lo:lo + size]
                x_t, x_s = chunk.teacher[idx].to(device), chunk.student[idx].to(device)
                last = (x_t, x_s)
                pre, f, r_t, r_s = model(x_t, x_s)
                mse = ((r_t - x_t).square().sum() + (r_s - x_s).square().sum()) / len(idx)
                fired = (f > 0).any(0)
                since_fired = torch.where(fired, 0, since_fired + len(idx))
                dead = since_fired >= settings.dead_after_tokens
                loss = mse
                if settings.aux_coefficient > 0:
                    loss = loss + settings.aux_coefficient * aux_loss(model, pre, x_t, x_s, r_t, r_s, dead, settings.aux_k)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                log.steps += 1
                log.tokens += len(idx)
                log.final_loss = float(mse.detach())
                if progress:
                    progress(len(idx))
                if log.steps >= total_steps:
                    break
            if log.steps >= total_steps:
                break
        if not seen_any:
            raise ValueError("the activation stream is empty")
    log.seconds = time.perf_counter() - start
    model.eval()
    if last is not None:
        model.calibrate_threshold(*last)
    return log
