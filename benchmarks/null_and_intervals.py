"""The chance level's and the alignment interval's cost, side by side, on the GPT-2-small-shaped pair.

Prints CPU seconds (torch and BLAS on one thread, so that a shared machine's load moves
the numbers less than wall time would):
- the student's exact sweep against ten random students (``circuitdiff.null``: a seeded
  init, a reference pass and one attribution forward+backward each, plus the exactness
  check on the first), for one task, and against reading the same ten from a
  ``--null-cache`` folder, as every later run on that architecture does;
- the alignment bootstrap per resample: Gram matrices computed once and re-weighted
  (weighted debiased CKA) against recomputing every component's Gram matrix on the
  resample's distinct prompts (the approach before), with the same transport solve.

    python benchmarks/null_and_intervals.py [--prompts 24] [--boot 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

from common import model_dirs

warnings.simplefilter("ignore")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--boot", type=int, default=50)
    args = parser.parse_args()

    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from circuitdiff.analysis.alignment import score_arrays
    from circuitdiff.analysis.bootstrap import bootstrap_indices
    from circuitdiff.analysis.calibration import read_grams
    from circuitdiff.analysis.cka import weighted_cka_matrix
    from circuitdiff.analysis.similarity import similarity_matrix
    from circuitdiff.interventions.ablation import Ablation, Replacement
    from circuitdiff.interventions.exact import exact_sweep
    from circuitdiff.models.loading import load_model
    from circuitdiff.null import null_draw, null_draws
    from circuitdiff.null_cache import NullCache
    from circuitdiff.options import CompareOptions
    from circuitdiff.pipeline import batches, clean_pass
    from circuitdiff.tasks import encode_task, get_task

    torch.set_num_threads(1)
    clock = time.process_time
    teacher_dir, student_dir = model_dirs()
    teacher, student = load_model(str(teacher_dir)), load_model(str(student_dir))
    task = get_task("ioi", n_prompts=args.prompts, seed=0)
    enc = encode_task(task, student.tokenizer)
    clean, corrupted = batches(enc, student.device)
    replacement = Replacement(Ablation.MEAN, clean_pass(student, corrupted).cache, n_base=len(clean))
    start = clock()
    exact_sweep(student.adapter, clean, replacement, student.adapter.components())
    sweep = clock() - start
    start = clock()
    draws = null_draws(student, [enc], Ablation.MEAN, seed=0, n_null=10)[0]
    null = clock() - start
    print(f"student exact sweep {sweep:.1f} CPU s; 10 random students {null:.1f} CPU s "
          f"({null / sweep:.2f} sweeps; each random model is built once per run, so a second task costs less)")
    with tempfile.TemporaryDirectory() as folder:
        options = CompareOptions(n_null=10)
        NullCache(folder).keep(student, enc, options, draws)
        start = clock()
        cached = NullCache(folder).load(student, enc, options)
        warm = clock() - start
    assert cached is not None and all((a.effects == b.effects).all() for a, b in zip(cached, draws))
    print(f"the same 10 read from --null-cache {warm:.3f} CPU s ({warm / sweep:.3f} sweeps)")

    t_draw = null_draw(teacher, encode_task(task, teacher.tokenizer), Ablation.MEAN, seed=0)
    s_draw = null_draw(student, enc, Ablation.MEAN, seed=0)
    n = len(clean)
    rng = np.random.default_rng(0)
    et, es = rng.normal(size=(len(t_draw.effects), n)), rng.normal(size=(len(s_draw.effects), n))
    mask = np.ones((len(et), len(es)), dtype=bool)
    with threadpool_limits(limits=1, user_api="blas"):
        score_arrays(et[:, 0], es[:, 0], np.eye(len(et), len(es)), mask)  # imports POT (0.6 s) outside the timing
        start = clock()
        kt, ks = read_grams(t_draw.read_acts), read_grams(s_draw.read_acts)
        for idx in bootstrap_indices(n, args.boot, 0):
            w = np.bincount(idx, minlength=n).astype(np.float64)
            score_arrays(et @ w, es @ w, weighted_cka_matrix(kt, ks, w), mask)
        gram = (clock() - start) / args.boot
        start = clock()
        for idx in bootstrap_indices(n, args.boot, 0):
            w = np.bincount(idx, minlength=n).astype(np.float64)
            rows = np.unique(idx)
            sim = similarity_matrix({k: v[rows] for k, v in t_draw.read_acts.items()},
                                    {k: v[rows] for k, v in s_draw.read_acts.items()})
            score_arrays(et @ w, es @ w, sim.to_numpy(), mask)
        direct = (clock() - start) / args.boot
    print(f"alignment bootstrap per resample: Gram matrices re-weighted {gram * 1e3:.0f} ms, "
          f"recomputed {direct * 1e3:.0f} ms ({direct / gram:.1f}x)")


if __name__ == "__main__":
    main()
