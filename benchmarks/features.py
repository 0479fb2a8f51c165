"""Crosscoder training throughput against its arithmetic limit, measured side by side in one run.

A training step on a batch of B tokens multiplies (B, d_t + d_s) by the encoder (d_t + d_s, n) and the latent
code (B, n) by both decoders (n, d_t + d_s): 4 n (d_t + d_s) FLOPs per token forward, twice that backward, so
12 n (d_t + d_s) per token. The limit is that count at the rate this machine does a bare matmul of the
encoder's shape, timed here in the same process; the ratio (limit / measured time) says how far the step is
from it (BatchTopK's top-k, the Adam update and the AuxK loss are the rest).

    python benchmarks/features.py                 # the shipped pair's shape: d 128 + 128, 1024 latents
    python benchmarks/features.py --d-teacher 576 --d-student 576 --latents 4608 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, repeats: int, device: str) -> float:  # noqa: ANN001
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    from circuitdiff.features.activations import Chunk
    from circuitdiff.features.crosscoder import CrossCoder
    from circuitdiff.features.train import TrainSettings, train_crosscoder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-teacher", type=int, default=128)
    ap.add_argument("--d-student", type=int, default=128)
    ap.add_argument("--latents", type=int, default=1024)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev, d, n, b = args.device, args.d_teacher + args.d_student, args.latents, args.batch

    x = torch.randn(b, d, device=dev)
    w = torch.randn(d, n, device=dev)
    matmul = timed(lambda: x @ w, 20, dev)
    rate = 2 * b * d * n / matmul

    gen = torch.Generator().manual_seed(0)
    tokens = b * args.steps
    chunk = Chunk(torch.randn(tokens, args.d_teacher, generator=gen), torch.randn(tokens, args.d_student, generator=gen),
                  torch.zeros(tokens, 2, dtype=torch.long))
    model = CrossCoder(args.d_teacher, args.d_student, n, args.k)
    settings = TrainSettings(n_latents=n, k=args.k, n_tokens=tokens, batch_size=b)
    train_crosscoder(model, lambda: iter([chunk]), TrainSettings(n_latents=n, k=args.k, n_tokens=2 * b, batch_size=b),
                     device=dev)  # warm-up
    log = train_crosscoder(model, lambda: iter([chunk]), settings, device=dev)
    step = log.seconds / log.steps
    limit = 12 * n * d * b / rate
    print(f"shape: d_t {args.d_teacher} + d_s {args.d_student}, {n} latents, k {args.k}, batch {b}, {dev}, "
          f"{args.threads} thread(s)")
    print(f"bare matmul ({b}x{d} @ {d}x{n}): {rate / 1e9:.1f} GFLOP/s")
    print(f"training step: {step * 1e3:.1f} ms ({log.tokens_per_second:,.0f} tokens/s); "
          f"arithmetic limit {limit * 1e3:.1f} ms ({b / limit:,.0f} tokens/s); ratio {step / limit:.2f}x")


if __name__ == "__main__":
    main()
