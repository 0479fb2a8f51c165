"""Each model's circuits stand on their own; thresholds' circuits are reported with their overlaps.

A teacher that solves the task keeps its circuits when the student does not (only the comparison is
withheld, with its reason), in results.json and in the report. Pruning is a greedy walk, so circuits at
different thresholds need not be nested: each carries its overlap with the others, checked here against
Jaccard indices worked out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from circuitdiff.analysis.circuits import Circuit
from circuitdiff.analysis.matching import Match
from circuitdiff.analysis.circuits import compare_circuits
from circuitdiff.compare import compare
from circuitdiff.options import CompareOptions
from circuitdiff.report.render import render_from_folder
from tiny_models import tiny_model, word_tokenizer

N_PROMPTS = 12


def _save(model: torch.nn.Module, folder: Path) -> Path:
    model.save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


def _loud(seed: int, n_layers: int) -> torch.nn.Module:
    model = tiny_model("gpt2", seed=seed, n_layers=n_layers)
    with torch.no_grad():  # weights scaled up: clear preferences, effects far above rounding
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(6.0)
    return model


def _task_file(teacher: torch.nn.Module, student: torch.nn.Module, path: Path) -> Path:
    """Prompts whose answer the teacher prefers to the distractor by a margin, and the student does not."""
    tok = word_tokenizer()
    gen = torch.Generator().manual_seed(0)
    lines = []
    for i in range(N_PROMPTS):
        words = [f"w{int(w)}" for w in torch.randint(10, 50, (5,), generator=gen)]
        ids = torch.tensor([tok.convert_tokens_to_ids(words)])
        with torch.no_grad():
            t, s = (m(input_ids=ids).logits[0, -1] for m in (teacher, student))
        candidates = torch.tensor(tok.convert_tokens_to_ids([f"w{i}" for i in range(10, 50)]))
        gap_t = t[candidates][:, None] - t[candidates][None, :]
        gap_s = s[candidates][:, None] - s[candidates][None, :]
        score = torch.where(gap_s < -0.5, gap_t, torch.full_like(gap_t, -1e9))
        a, d = divmod(int(score.argmax()), len(candidates))
        assert score.max() > 0.5, "no answer the teacher prefers and the student does not"
        lines.append(json.dumps({"prompt": " ".join(words), "answer": f" w{10 + a}", "distractor": f" w{10 + d}",
                                 "template": "only"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_teacher_circuits_are_kept_when_the_student_does_not_solve_the_task(tmp_path: Path, one_torch_thread) -> None:
    teacher, student = _loud(1, 2), _loud(2, 1)
    task = _task_file(teacher, student, tmp_path / "split.jsonl")
    out = tmp_path / "out"
    compare(str(_save(teacher, tmp_path / "teacher")), str(_save(student, tmp_path / "student")), [str(task)],
            CompareOptions(ablation="zero", n_prompts=N_PROMPTS, n_boot=50, null_model=False), out, resume=False)
    stored = json.loads((out / "results.json").read_text())
    entry = stored["tasks"]["split.jsonl"]
    assert np.mean([entry["teacher"]["clean_metric"]]) > 0.5 and entry["student"]["clean_metric"] < 0
    circuit = entry["circuit"]
    assert [e["threshold"] for e in circuit["thresholds"]] == [0.1, 0.2, 0.3]
    for e in circuit["thresholds"]:
        assert e["teacher"]["size"] == len(e["teacher"]["components"]) >= 1
        assert e["student"] is None and e["overlap_jaccard"] is None
        assert e["comparison_withheld"].startswith("no student circuit: there is nothing to prune against")
    assert circuit["teacher"] == next(e for e in circuit["thresholds"] if e["threshold"] == 0.2)["teacher"]["components"]
    assert circuit["student"] == [] and "no student circuit" in circuit["comparison_withheld"]
    assert any(n["code"] == "circuit.no_signal" and n["role"] == "student" for n in stored["notes"])
    page = render_from_folder(out).read_text(encoding="utf-8")
    assert "Comparison withheld: no student circuit: there is nothing to prune against" in page
    assert "Not available: no student circuit" not in page  # the section is there, with the teacher's circuits
    first = circuit["thresholds"][0]["teacher"]
    assert f"<td>{first['size']} (faithful {first['faithfulness']:.2f}" in page
    # each circuit's overlap with the teacher's circuits at the other thresholds, beside it
    overlap = circuit["thresholds"][0]["overlap_with_thresholds"]["teacher"]
    assert [o["threshold"] for o in overlap] == [0.2, 0.3] and "student" not in circuit["thresholds"][0]["overlap_with_thresholds"]
    assert f"<td>T=0.2: {overlap[0]['jaccard']:.2f}, T=0.3: {overlap[1]['jaccard']:.2f}</td>" in page
    assert "need not be nested" in page and set(circuit["nested"]) == {"teacher"}


def _circuit(threshold: float, names: list[str]) -> Circuit:
    return Circuit(threshold=threshold, components=names, size=len(names), faithfulness=1.0)


def test_threshold_overlaps_and_nesting_against_hand_computed_jaccards() -> None:
    teacher = [_circuit(0.1, ["A", "B", "C"]), _circuit(0.2, ["A", "D"]), _circuit(0.3, ["A"])]
    student = [_circuit(0.1, ["x", "y"]), _circuit(0.2, ["x", "y"]), _circuit(0.3, ["x"])]
    matching = [Match(teacher="A", student="x", similarity=0.9), Match(teacher="B", student="y", similarity=0.8)]
    out = compare_circuits(teacher, student, matching)
    by_t = {e["threshold"]: e for e in out["thresholds"]}
    overlaps = {t: {o["threshold"]: o["jaccard"] for o in e["overlap_with_thresholds"]["teacher"]} for t, e in by_t.items()}
    # {A,B,C} vs {A,D}: 1 of 4; {A,B,C} vs {A}: 1 of 3; {A,D} vs {A}: 1 of 2
    assert overlaps == {0.1: {0.2: 0.25, 0.3: 1 / 3}, 0.2: {0.1: 0.25, 0.3: 0.5}, 0.3: {0.1: 1 / 3, 0.2: 0.5}}
    assert {o["threshold"]: o["jaccard"] for o in by_t[0.3]["overlap_with_thresholds"]["student"]} == {0.1: 0.5, 0.2: 0.5}
    assert out["nested"] == {"teacher": False, "student": True}  # D at 0.2 is not in the 0.1 circuit
    assert by_t[0.2]["overlap_jaccard"] == 1 / 3 and by_t[0.1]["teacher_recall"] == 2 / 3  # student -> {A, B}
    assert "comparison_withheld" not in out


def test_alignment_is_withheld_when_no_component_moves_the_metric(tmp_path: Path) -> None:
    """Noising with corrupted prompts equal to the clean ones patches every component with its own activation:
    every effect is exactly 0 in both models, so there is no reliance to align. The run finishes (no traceback),
    the score is None with its reason, and the report is written."""
    names = ["Mary", "Anna", "Kate", "Lucy", "Emma", "Sara"]
    task = tmp_path / "same.jsonl"
    task.write_text("".join(json.dumps({"prompt": p, "corrupted_prompt": p, "answer": f" {n}", "distractor": " John"})
                            + "\n" for n in names
                            for p in [f"When {n} and John went to the store, John gave a drink to"]))
    options = CompareOptions(ablation="noising", null_model=False, n_boot=50, circuits=False)
    results = compare("tiny-gpt2", "tiny-distilgpt2", [str(task)], options, out=tmp_path / "out", progress=False)
    entry = results["tasks"]["same.jsonl"]
    for role in ("teacher", "student"):
        assert all(c["effect"] == 0.0 for c in entry[role]["components"]), role
    assert entry["alignment"]["score"] is None and "withheld" in entry["alignment"]["withheld"]
    assert any(n["code"] == "alignment.withheld" for n in results["notes"])
    assert (tmp_path / "out" / "report.html").is_file()
