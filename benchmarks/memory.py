"""Peak memory of a whole ``circuitdiff compare`` on the GPT-2-small-shaped pair (goal: under 4 GB).

    python benchmarks/memory.py                    # ioi, 64 prompts, exact sweep, default options
    python benchmarks/memory.py --method attribution

The comparison runs in a fresh child process, so its peak resident set size (ru_maxrss)
counts everything it loaded and computed: both models, the null student, the tokenizer,
sweeps, circuits, bootstrap and the written results. Falls back to
``pipeline.run_model_on_task`` on both models (and says so) if the compare API fails.
"""

from __future__ import annotations

import argparse
import tempfile

from common import model_dirs, run_child

GOAL_BYTES = 4 * 10**9

CHILD = r"""
import json, sys, time
sys.path.insert(0, {src!r})
from circuitdiff.interventions.methods import Method
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
try:
    from circuitdiff.compare import CompareOptions, compare
    compare(args["teacher"], args["student"], [args["task"]],
            CompareOptions(n_prompts=args["n_prompts"], method=Method(args["method"])), args["out"])
    what = "circuitdiff.compare.compare (whole comparison, default options)"
except Exception as exc:  # the compare API may be under construction
    from circuitdiff.models.loading import load_model
    from circuitdiff.pipeline import run_model_on_task
    from circuitdiff.tasks import get_task
    from circuitdiff.interventions.ablation import Ablation
    print(f"compare failed ({{type(exc).__name__}}: {{exc}}); measuring run_model_on_task instead", file=sys.stderr)
    for spec in (args["teacher"], args["student"]):
        lm = load_model(spec)
        run_model_on_task(lm, get_task(args["task"], n_prompts=args["n_prompts"]), Ablation.MEAN, method=Method(args["method"]))
    what = f"pipeline.run_model_on_task on both models (compare failed: {{type(exc).__name__}}: {{exc}})"
print(json.dumps({{"what": what, "seconds": time.perf_counter() - t0}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-prompts", type=int, default=64)
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--method", default="exact", choices=["exact", "attribution", "hybrid"])
    args = parser.parse_args()
    teacher, student = model_dirs()
    with tempfile.TemporaryDirectory() as out:
        info, wall, peak = run_child(CHILD, {"teacher": str(teacher), "student": str(student), "task": args.task,
                                             "n_prompts": args.n_prompts, "method": args.method, "out": out})
    print(f"measured: {info['what']}; task {args.task}, {args.n_prompts} prompts, method {args.method}")
    print(f"wall time {wall:.0f} s; peak RSS {peak / 1e9:.2f} GB (goal < {GOAL_BYTES / 1e9:.0f} GB): "
          f"{'PASS' if peak < GOAL_BYTES else 'FAIL'}")


if __name__ == "__main__":
    main()
