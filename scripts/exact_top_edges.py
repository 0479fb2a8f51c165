"""Exact path patching of the top-N edges by EAP-IG from a compare run's edges.parquet, and the
Spearman correlation of EAP-IG with exact on those edges (for models where exact on every edge is too slow).

    python scripts/exact_top_edges.py TEACHER STUDENT OUT_DIR TASK N_PROMPTS TOP

OUT_DIR is a ``circuitdiff compare --edges eap-ig`` output folder; TASK, N_PROMPTS and the
mean ablation must be the run's (seed 0), so that the exact effects are of the same prompts.
"""
import sys, time
import pandas as pd
from scipy.stats import spearmanr
from circuitdiff.interventions.ablation import Ablation
from circuitdiff.interventions.edges import all_edges, exact_edge_metrics, receiver_name
from circuitdiff.interventions.edge_methods import base_cache_for
from circuitdiff.models.loading import load_model
from circuitdiff.pipeline import _replacements, batches, clean_pass
from circuitdiff.tasks import encode_task, get_task

teacher, student, out, task_name, n, top = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
frame = pd.read_parquet(f"{out}/edges.parquet")
for role, name in (("teacher", teacher), ("student", student)):
    t0 = time.perf_counter()
    lm = load_model(name)
    task = get_task(task_name, n_prompts=n, seed=0)
    enc = encode_task(task, lm.tokenizer)
    clean_batch, corrupted_batch = batches(enc, lm.device)
    clean = clean_pass(lm, clean_batch)
    corrupted = clean_pass(lm, corrupted_batch) if corrupted_batch is not None else None
    base_batch, base, replacement, _ = _replacements(Ablation.MEAN, clean, corrupted, clean_batch, corrupted_batch, enc, 0)
    cache = base_cache_for(clean.cache, corrupted.cache if corrupted else None, False)
    gq = lm.adapter.grouped_query_attention
    edges = {(e.sender.name, receiver_name(e.receiver, gq), e.channel): e for e in all_edges(lm.adapter)}
    rows = frame[(frame.model == role) & (frame.task == task_name) & (frame.method == "eap-ig")].copy()
    rows = rows.reindex(rows.effect.abs().sort_values(ascending=False).index).head(top)
    chosen = [edges[(r.sender, r.receiver, r.channel)] for r in rows.itertuples()]
    patched = exact_edge_metrics(lm.adapter, base_batch, cache, replacement, chosen).double().numpy()
    exact = (patched - base[None, :]).mean(1)
    rho = spearmanr(exact, rows.effect.to_numpy()).statistic
    print(f"{role}: {len(edges)} edges; top {len(chosen)} by |EAP-IG|: Spearman(EAP-IG, exact) = {rho:.3f}; "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
