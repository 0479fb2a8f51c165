"""Model cards (README.md) and the machine-readable ``lab_report.json`` beside them.

The card states how the model was made and what it measurably does, so a user comparing
students made with different recipes has the numbers next to the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from circuitdiff.lab.evaluate import brief

REPORT_FILE = "lab_report.json"


def _cell(r: dict[str, Any] | None, key: str) -> str:
    if r is None or "error" in r:
        return "n/a"
    return f"{100 * r[key]:.1f}%" if key == "accuracy" else f"{r[key]:.2f}"


def _note(r: dict[str, Any]) -> str:
    if "error" in r:
        return brief(r["error"])
    if r.get("dropped"):
        return f"on the {r['n_prompts']} prompts kept ({r['dropped']} have an answer the tokenizer splits)"
    if r.get("multi_token"):
        return "answers of several tokens: the metric is the teacher-forced log-probability difference"
    return ""


def _table(evaluation: dict[str, dict[str, Any]], teacher: dict[str, dict[str, Any]] | None) -> list[str]:
    """Task rows; with the teacher's figures beside the student's when known."""
    if teacher is None:
        lines = ["| task | accuracy | mean metric | note |", "|---|---|---|---|"]
        for name, r in evaluation.items():
            lines.append(f"| {name} | {_cell(r, 'accuracy')} | {_cell(r, 'mean_logit_diff')} | {_note(r)} |")
        return lines
    lines = ["| task | teacher accuracy | student accuracy | teacher metric | student metric | note |",
             "|---|---|---|---|---|---|"]
    for name, r in evaluation.items():
        t = teacher.get(name)
        lines.append(f"| {name} | {_cell(t, 'accuracy')} | {_cell(r, 'accuracy')} | {_cell(t, 'mean_logit_diff')} "
                     f"| {_cell(r, 'mean_logit_diff')} | {_note(r)} |")
    return lines


def _mix(data: dict[str, Any]) -> str:
    if not data["tasks"]:
        return "alone (no task prompts: whatever it knows of the tasks came through its teacher or the text)"
    return (f"mixed with circuitdiff's built-in task prompts (about {100 * data['task_token_fraction']:.0f}% "
            "of the training tokens are task prompts)")


def _tokenizer_line(report: dict[str, Any]) -> str:
    if not report.get("lab_tokenizer", True):
        split = ("answers it splits into several tokens are teacher-forced, see the notes below" if report["kind"] == "causal"
                 else "answers it splits into several word pieces make a task n/a below")
        return f"- tokenizer: the teacher's own ({split})"
    kind = report["kind"]
    style = ("byte-level BPE (GPT-2 style, numbers split into 1-2 digit pieces)" if kind == "causal"
             else "uncased WordPiece (BERT style, [CLS] ... [SEP])")
    shared = "" if report["role"] == "teacher" else " (the student shares its teacher's tokenizer)"
    return (f"- tokenizer: {style}, trained on the corpus plus task text; every answer and distractor of the "
            f"built-in tasks is one token{shared}")


def _training_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        f"- steps: {report['steps']} of batch {report['recipe']['optim']['batch_size']}; "
        f"training tokens: {report['tokens']:,}; wall time: {report['wall_time_s']:.0f} s "
        f"({report.get('cpu_time_s', 0):.0f} s of CPU time, {report.get('threads', 1)} thread(s))",
    ]
    cost = report.get("cost_per_1k_tokens")
    if cost:
        what = "teacher forward + student step" if report["role"] == "student" else "training step"
        peak = f"; peak memory {cost['peak_rss_gib']} GiB" if "peak_rss_gib" in cost else ""
        lines.append(f"- cost per 1,000 training tokens ({what}): {cost['wall_s']:.2f} s wall, "
                     f"{cost['cpu_s']:.2f} s CPU{peak}")
    lines.append(f"- final losses: {json.dumps(report['last_losses'])}")
    circuit = report.get("circuit_loss")
    if circuit:
        first = circuit["choices"][0] if circuit["choices"] else {"pairs": []}
        held = ", ".join(f"{p['student']}->{p['teacher']}" for p in first["pairs"])
        lines.append(f"- circuit loss (weight {report['recipe']['alpha_circuit']}): 1 - linear CKA between each "
                     f"task-carrying student component and its matched teacher component, pairs chosen by "
                     f"circuitdiff on {', '.join(circuit['tasks'])} at steps "
                     f"{[c['step'] for c in circuit['choices']]}; first choice: {held or 'none'}")
    return lines


def render_card(report: dict[str, Any]) -> str:
    """Markdown card from a lab report (see ``write_card`` for the keys)."""
    arch, kind, role, ev = report["architecture"], report["kind"], report["role"], report["evaluation"]
    tiny = report.get("lab_tokenizer", True)  # the lab's own tokenizer means a tiny model it made from scratch
    size = "tiny " if tiny else ""
    made = ("Trained from scratch" if role == "teacher" else
            f"Distilled from `{report.get('teacher', '?')}`, initialised from its layers {report['recipe'].get('layers')},")
    purpose = ("It exists to test and demonstrate teacher/student circuit comparison; it is not a useful language model."
               if tiny else "It is a depth-pruned student made to compare its circuits with its teacher's.")
    data = report["data"]
    counted = [r["n_prompts"] + r.get("dropped", 0) for r in ev.values() if "n_prompts" in r]
    kv = f" ({arch['n_kv_heads']} key/value heads)" if arch.get("n_kv_heads", arch["n_heads"]) != arch["n_heads"] else ""
    lines = [
        "---", "library_name: transformers",
        f"tags: [circuitdiff, {'tiny, ' if tiny else ''}{'causal-lm' if kind == 'causal' else 'fill-mask'}]",
        "---", "", f"# {report['name']}: a {size}{arch['model_type']} {role} made by the circuitdiff lab", "",
        f"{made} on the corpus `{data['corpus']}` {_mix(data)}. {purpose}",
        "", "## Size", "",
        f"- architecture: `{arch['architecture']}`, {arch['n_layers']} layers, {arch['n_heads']} heads{kv}, "
        f"d_model {arch['d_model']}, d_mlp {arch['d_mlp']}, context {arch['context']}, vocabulary {arch['vocab_size']}",
        f"- parameters: {arch['n_parameters']:,} (stored as float16 safetensors; load as float32)"
        + (f"; the teacher has {report['teacher_architecture']['n_parameters']:,}" if "teacher_architecture" in report else ""),
        _tokenizer_line(report),
        "", "## Training", "", *_training_lines(report),
        "", "Recipe (also in `lab_report.json`):", "",
        *[f"- {key}: `{json.dumps(value)}`" for key, value in report["recipe"].items()],
        "", "## Measured task behaviour", "",
        f"Accuracy = share of prompts where the answer logit beats the distractor logit at the read "
        f"position (for answers of several tokens: where the answer's teacher-forced summed log-probability "
        f"beats the distractor's; the metric column is that difference); "
        f"{counted[0] if counted else 'no'} evaluation prompts per task "
        f"(seed {report['eval_seed']}; training prompts come from a seed stream evaluation never uses). "
        f"{'Masked' if kind == 'masked' else 'Causal'} variants of the tasks.",
        "", *_table(ev, report.get("teacher_evaluation")), "",
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
