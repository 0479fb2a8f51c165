"""Model cards (README.md) and the machine-readable ``lab_report.json`` beside them.

The card states how the model was made and what it measurably does, so a user comparing
students made with different recipes has the numbers next to the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_FILE = "lab_report.json"


def _table(evaluation: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| task | accuracy | mean logit diff | prompts |", "|---|---|---|---|"]
    for name, r in evaluation.items():
        if "error" in r:
            lines.append(f"| {name} | n/a | n/a | {r['error']} |")
        else:
            lines.append(f"| {name} | {100 * r['accuracy']:.1f}% | {r['mean_logit_diff']:.2f} | {r['n_prompts']} |")
    return lines


def render_card(report: dict[str, Any]) -> str:
    """Markdown card from a lab report (see ``write_card`` for the keys)."""
    arch = report["architecture"]
    kind = report["kind"]
    role = report["role"]
    ev = report["evaluation"]
    title = f"# {report['name']}: a tiny {arch['model_type']} {role} made by the circuitdiff lab"
    made = ("Trained from scratch" if role == "teacher" else
            f"Distilled from `{report.get('teacher', '?')}`, initialised from its layers {report['recipe'].get('layers')}")
    data = report["data"]
    lines = [
        "---", "library_name: transformers", "tags: [circuitdiff, tiny, " + ("causal-lm" if kind == "causal" else "fill-mask") + "]", "---",
        "", title, "",
        f"{made} on the corpus `{data['corpus']}` mixed with circuitdiff's built-in task prompts "
        f"(about {100 * data['task_token_fraction']:.0f}% of the training tokens are task prompts). "
        "It exists to test and demonstrate teacher/student circuit comparison; it is not a useful language model.",
        "", "## Size", "",
        f"- architecture: `{arch['architecture']}`, {arch['n_layers']} layers, {arch['n_heads']} heads, "
        f"d_model {arch['d_model']}, d_mlp {arch['d_mlp']}, context {arch['context']}, vocabulary {arch['vocab_size']}",
        f"- parameters: {arch['n_parameters']:,} (stored as float16 safetensors; load as float32)",
        "- tokenizer: " + (
            "byte-level BPE (GPT-2 style, numbers split into 1-2 digit pieces)" if kind == "causal"
            else "uncased WordPiece (BERT style, [CLS] ... [SEP])"
        ) + ", trained on the corpus plus task text; every answer and distractor of the built-in tasks is one token"
        + ("" if role == "teacher" else " (the student shares its teacher's tokenizer)"),
        "", "## Training", "",
        f"- steps: {report['steps']} of batch {report['recipe']['optim']['batch_size']}; "
        f"training tokens: {report['tokens']:,}; wall time: {report['wall_time_s']:.0f} s "
        f"({report.get('cpu_time_s', 0):.0f} s of CPU time, {report.get('threads', 1)} thread(s))",
        f"- final losses: {json.dumps(report['last_losses'])}",
        "", "Recipe (also in `lab_report.json`):", "",
        *[f"- {key}: `{json.dumps(value)}`" for key, value in report["recipe"].items()],
        "", "## Measured task behaviour", "",
        f"Accuracy = share of prompts where the answer logit beats the distractor logit at the read "
        f"position; {next(iter(ev.values())).get('n_prompts', '?')} evaluation prompts per task "
        f"(seed {report['eval_seed']}; training prompts come from a seed stream evaluation never uses). "
        f"{'Masked' if kind == 'masked' else 'Causal'} variants of the tasks.",
        "", *_table(ev), "",
    ]
    overlap = {k: v["eval_overlap_kept"] for k, v in data["tasks"].items() if v.get("eval_overlap_kept")}
    if overlap:
        lines += [
            "Some tasks have so few distinct prompts that training prompts repeat evaluation prompts "
            f"(counts of such training prompts: {json.dumps(overlap)}); their scores partly measure memorisation.", "",
        ]
    return "\n".join(lines)


def write_card(folder: Path, report: dict[str, Any]) -> None:
    """Write README.md and lab_report.json into a model folder."""
    (folder / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    (folder / "README.md").write_text(render_card(report))


def read_report(folder: Path) -> dict[str, Any]:
    """The lab report of a model folder made by the lab."""
    return json.loads((folder / REPORT_FILE).read_text())
