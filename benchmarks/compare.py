"""A whole ``compare`` with everything on against the study's pipeline, by phase, in one run.

    python benchmarks/compare.py                 # GPT-2-small-shaped random pair, 24 IOI prompts
    python benchmarks/compare.py --tl-sample 12  # more TransformerLens forwards in the sample

circuitdiff side: one ``circuitdiff.compare.compare`` in a fresh child process with the default
options (exact sweeps, circuits at the default thresholds, the calibrated null of 10 random
students, 1000 bootstrap resamples, report written), timed by phase from wrappers around the
functions each phase runs; the child's wall time (interpreter start included) is the total, and
its peak resident memory is read from ``ru_maxrss``.

Study side, the way its public code runs on TransformerLens: one forward pass per component
(plus one clean pass) for the node sweeps of the teacher, the student and one random student,
and one forward per candidate for node pruning at each threshold. TransformerLens's
``run_with_hooks`` forwards are timed here for an evenly spread sample of components of each model
(half before and half after the compare, so both meet the same load); every forward of a model
costs the same, so the pipeline is counted in those per-forward units. Its start-up, null
beyond one draw, analysis and report are not counted (in its favour). Without TransformerLens
the same loop with plain forward hooks on the Hugging Face model is timed instead, and the
output says so. The sampled forwards' ablated metrics must equal the compare's (printed).

Random models' clean logit difference is near 0, which withholds circuits; so each prompt's
answer and distractor are the tokens both models rank highest and lowest (a custom JSONL task
with the IOI prompts, corrupted prompts and templates), and the circuits run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import model_dirs, run_child  # also puts src/ on sys.path

import numpy as np
import torch

CHILD = r"""
import time
T0 = time.perf_counter()
import json, sys
sys.path.insert(0, {src!r})
args = json.loads(sys.argv[1])
import circuitdiff.compare as cmp
import circuitdiff.pipeline as pipe
import circuitdiff.report as rep
phases = {{"imports": time.perf_counter() - T0}}
ablated = {{}}
current = ["?"]

def timed(module, name, phase, per_model=False):
    inner = getattr(module, name)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            key = f"{{phase}} {{current[0]}}" if per_model else phase
            phases[key] = phases.get(key, 0.0) + time.perf_counter() - t
    setattr(module, name, wrapper)

run_inner = cmp.run_model_on_task
def run_model(lm, *a, **k):
    current[0] = "teacher" if lm is teacher[0] else "student"
    run = run_inner(lm, *a, **k)
    ablated[current[0]] = run.ablated.tolist()
    return run
cmp.run_model_on_task = run_model
teacher = [None]
load_inner = cmp.as_loaded_model
def load(spec, **k):
    lm = load_inner(spec, **k)
    if teacher[0] is None:
        teacher[0] = lm
    return lm
cmp.as_loaded_model = load
timed(cmp, "as_loaded_model", "model loading")
for name in ("clean_pass", "ablated_metrics", "attribution_effects", "_circuits"):
    timed(pipe, name, {{"clean_pass": "clean passes", "ablated_metrics": "sweep", "attribution_effects":
                      "attribution check", "_circuits": "circuits"}}[name], per_model=True)
timed(cmp, "run_null", "null (10 random students)")
timed(cmp, "analyse_runs", "pair analysis")
timed(cmp, "write_outputs", "outputs")
timed(rep, "write_report", "report")
t = time.perf_counter()
results = cmp.compare(args["teacher"], args["student"], [args["task"]], out=args["out"], progress=False,
                      n_prompts=args["n_prompts"], seed=args["seed"])
phases["whole compare() call"] = time.perf_counter() - t
print(json.dumps({{"phases": phases, "ablated": ablated, "warnings": results["warnings"],
                  "since_start": time.perf_counter() - T0}}))
"""


def make_task(teacher: Path, student: Path, n_prompts: int, seed: int, path: Path, **load: object) -> None:
    """IOI prompts whose answer/distractor are the tokens both random models rank highest/lowest.

    ``load``: keywords for ``load_model`` (device, dtype); one model is in memory at a time."""
    from circuitdiff.models.loading import load_model
    from circuitdiff.pipeline import batches
    from circuitdiff.tasks import encode_task, get_task

    task = get_task("ioi", n_prompts=n_prompts, seed=seed)
    score = None
    for folder in (teacher, student):
        lm = load_model(str(folder), **load)  # type: ignore[arg-type]
        clean, _ = batches(encode_task(task, lm.tokenizer), lm.device)
        with torch.no_grad():
            logits = lm.model(input_ids=clean.input_ids, attention_mask=clean.attention_mask).logits
        at = logits[torch.arange(len(clean)), clean.read_pos].double().cpu()
        z = (at - at.mean(1, keepdim=True)) / at.std(1, keepdim=True)
        score = z if score is None else score + z
        tok = lm.tokenizer
        del lm, logits
    ok = lambda i: (s := tok.decode([i])).startswith(" ") and s.strip() and tok.encode(s) == [i]  # noqa: E731
    with path.open("w") as f:
        for p, row in zip(task.prompts, score):  # type: ignore[union-attr]
            order = torch.argsort(row[: len(tok)], descending=True).tolist()  # ids the tokenizer can write
            answer = next(i for i in order if ok(i))
            distractor = next(i for i in reversed(order) if ok(i))
            f.write(json.dumps({"prompt": p.prompt, "answer": tok.decode([answer]), "distractor": tok.decode([distractor]),
                                "corrupted_prompt": p.corrupted_prompt, "template": p.template}) + "\n")


class StudyForwards:
    """The study's per-component forward, timed: TransformerLens's run_with_hooks, or plain hooks without it."""

    def __init__(self, folder: Path, task_path: Path, seed: int) -> None:
        from sweep import transformer_lens_model

        from circuitdiff.interventions.ablation import Ablation, Replacement
        from circuitdiff.models.loading import load_model
        from circuitdiff.pipeline import batches, clean_pass
        from circuitdiff.tasks import encode_task
        from circuitdiff.tasks.jsonl import load_jsonl_task

        self.lm = load_model(str(folder))
        enc = encode_task(load_jsonl_task(task_path), self.lm.tokenizer)
        self.clean, corrupted = batches(enc, self.lm.device)
        reference = clean_pass(self.lm, corrupted).cache  # as run_model_on_task: the corrupted prompts' means
        self.replacement = Replacement(Ablation.MEAN, reference, n_base=len(self.clean), seed=seed,
                                       groups=enc.template_ids, min_group=1)
        self.components = self.lm.adapter.components()
        self.tl = transformer_lens_model(str(folder), self.lm)
        self.times: list[float] = []
        self.out: dict[int, np.ndarray] = {}

    def run(self, i: int) -> None:
        from sweep import loop_forward, transformer_lens_forward

        from circuitdiff.interventions.hooks import Patch

        c = self.components[i]
        if self.tl is not None:
            self.out[i] = transformer_lens_forward(self.tl, self.clean, self.replacement, c, self.times).numpy()
            return
        rows = torch.arange(len(self.clean))
        t0 = time.perf_counter()
        self.out[i] = loop_forward(self.lm, self.clean, [Patch(c, rows, self.replacement.values(c, rows))]).numpy()
        self.times.append(time.perf_counter() - t0)


def run_compare(teacher: Path, student: Path, task: Path, args: argparse.Namespace, out: str) -> tuple[dict, float, int]:
    return run_child(CHILD, {"teacher": str(teacher), "student": str(student), "task": str(task),
                             "n_prompts": args.n_prompts, "seed": args.seed, "out": out})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-prompts", type=int, default=24)
    parser.add_argument("--tl-sample", type=int, default=8, help="forwards timed per model (half before, half after)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from circuitdiff.analysis.circuits import SWEEP_THRESHOLDS

    teacher, student = model_dirs(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        task = Path(tmp) / "ioi-top-bottom.jsonl"
        make_task(teacher, student, args.n_prompts, args.seed, task)
        study = {"teacher": StudyForwards(teacher, task, args.seed), "student": StudyForwards(student, task, args.seed)}
        kind = "TransformerLens run_with_hooks" if study["teacher"].tl is not None else \
            "plain-HF forward hooks (TransformerLens not installed)"
        picks = {}
        for role, s in study.items():
            C = len(s.components)
            picks[role] = sorted({round(j * (C - 1) / max(1, args.tl_sample - 1)) for j in range(args.tl_sample)})
            s.run(picks[role][0])  # warm-up, not timed
            s.times.clear()
            for i in picks[role][::2]:
                s.run(i)
        info, wall, peak = run_compare(teacher, student, task, args, str(Path(tmp) / "out"))
        for role, s in study.items():
            for i in picks[role][1::2]:
                s.run(i)
    report(info, wall, peak, study, picks, kind, len(SWEEP_THRESHOLDS), args)


def report(info: dict, wall: float, peak: int, study: dict, picks: dict, kind: str, n_thr: int,
           args: argparse.Namespace) -> None:
    phases = info["phases"]
    print(f"circuitdiff compare benchmark: GPT-2-small-shaped random teacher (12L x 12H) and 6-layer student, "
          f"{args.n_prompts} IOI prompts (top/bottom tokens as answer/distractor); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"\ncircuitdiff compare, everything on (child process, wall {wall:.1f} s, peak RSS {peak / 1e9:.2f} GB):")
    start = wall - info["since_start"] + phases["imports"]
    print(f"  {'interpreter start + imports':34} {start:7.1f} s")
    for name, sec in phases.items():
        if name != "imports":
            print(f"  {name:34} {sec:7.1f} s")
    diffs, unit = [], {}
    for role, s in study.items():
        got = np.asarray(info["ablated"][role])
        diffs += [float(np.abs(got[i] - s.out[i]).max()) for i in picks[role]]
        unit[role] = sum(s.times) / len(s.times)
    ct, cs = len(study["teacher"].components), len(study["student"].components)
    sweeps = (ct + 1) * unit["teacher"] + 2 * (cs + 1) * unit["student"]
    pruning = n_thr * (ct * unit["teacher"] + cs * unit["student"])
    total = sweeps + pruning
    print(f"\nstudy pipeline ({kind}; {len(study['teacher'].times)}+{len(study['student'].times)} forwards timed, "
          f"mean {unit['teacher']:.3f} s teacher, {unit['student']:.3f} s student):")
    print(f"  node sweeps teacher+student+null  {sweeps:7.1f} s  ({ct + 1} + {cs + 1} + {cs + 1} forwards)")
    print(f"  node pruning, {n_thr} thresholds       {pruning:7.1f} s  ({n_thr} x ({ct} + {cs}) forwards)")
    print(f"  total                             {total:7.1f} s")
    for w in info["warnings"]:
        print(f"  compare warning: {w}")
    print(f"\nmax |compare - study| over the sampled components' ablated metrics: {max(diffs):.1e}")
    sweep_ours = sum(v for k, v in phases.items() if k.startswith(("sweep", "clean passes")))
    print(f"RATIOS whole_compare_vs_study={total / wall:.2f}x ({wall:.0f} s vs {total:.0f} s) "
          f"sweeps_vs_study_sweeps={(sweeps - (cs + 1) * unit['student']) / sweep_ours:.2f}x "
          f"peak_rss={peak / 1e9:.2f}GB max_diff={max(diffs):.1e}")


if __name__ == "__main__":
    main()
