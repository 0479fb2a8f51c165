"""Report details a reader relies on: true prompt counts, example prompts, readable sizes, figures that
show only what exists, a matching diagram that names components without tangling, and notes that say why."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
from test_report import make_results_folder

from circuitdiff.report import figures, write_report
from circuitdiff.report.render import human_bytes


def _frame(names: list[str]) -> pd.DataFrame:
    rows = []
    for i, name in enumerate(names):
        layer = int(name[1:].split(".")[0])
        head = None if name.endswith("MLP") else int(name.split(".H")[1])
        rows.append({"name": name, "kind": "mlp" if head is None else "head", "layer": layer, "head": head,
                     "share": 1.0 / len(names), "support": 0.1, "effect": 0.1})
    return pd.DataFrame(rows)


def test_header_counts_the_prompts_each_task_really_has(tmp_path: Path) -> None:
    results = make_results_folder(tmp_path, shape=(4, 2, 4), tasks=("ioi",), n_prompts=5)
    results["options"]["n_prompts"] = 64  # the built-in default; the task itself has 5
    page = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert "· 5 prompts ·" in page and "64 prompts" not in page
    results["tasks"]["mine.jsonl"] = {**results["tasks"]["ioi"], "n_prompts": 7}
    page = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert "prompts: ioi 5, mine.jsonl 7" in page


def test_memory_budget_and_example_prompt_are_readable(tmp_path: Path) -> None:
    results = make_results_folder(tmp_path, shape=(4, 2, 4), tasks=("ioi",), n_prompts=6)
    results["options"]["memory_budget"] = 1 << 30
    results["tasks"]["ioi"]["example"] = {"prompt": "When Mary and John went out, John gave a book to",
                                          "answer": " Mary", "distractor": " John"}
    page = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert "1 GiB per forward pass" in page and str(1 << 30) not in page
    assert "Example prompt:" in page and "When Mary and John went out, John gave a book to" in page
    assert "&#34; Mary&#34;" in page or '" Mary"' in page  # the leading space stays visible, quoted
    assert [human_bytes(n) for n in (512, 1536, 3 * 2**20, 2**40)] == ["512 B", "1.5 KiB", "3 MiB", "1 TiB"]


def test_student_circuit_panel_has_only_the_students_layers() -> None:
    t = _frame([f"L{layer}.H{h}" for layer in range(6) for h in range(2)] + [f"L{layer}.MLP" for layer in range(6)])
    s = _frame([f"L{layer}.H{h}" for layer in range(2) for h in range(2)] + [f"L{layer}.MLP" for layer in range(2)])
    fig = figures.circuits(t, s, ["L0.H0", "L5.MLP"], ["L1.H1"], [])
    teacher_ax, student_ax = fig.axes[:2]
    assert teacher_ax.get_ylim() == (6, 0) and student_ax.get_ylim() == (2, 0)
    assert [tick.get_text() for tick in student_ax.get_yticklabels()] == ["L0", "L1"]


def _crossings(fig, flows: list[dict]) -> int:
    """Pairs of drawn flows whose ends are in opposite orders on the two sides (read off the labels)."""
    ax = fig.axes[0]
    y = {}
    for text in ax.texts:
        name = text.get_text().split(" ")[0]
        side = "teacher" if text.get_horizontalalignment() == "right" else "student"
        y[(side, name)] = text.get_position()[1]
    ends = [(y[("teacher", f["teacher"])], y[("student", f["student"])]) for f in flows]
    return sum((a[0] - b[0]) * (a[1] - b[1]) < 0 for a, b in itertools.combinations(ends, 2))


def test_matching_diagram_labels_components_and_does_not_tangle() -> None:
    teacher_names = [f"L{layer}.H0" for layer in range(8)]
    student_names = [f"L{layer}.H{h}" for layer in range(4) for h in range(2)]
    t, s = _frame(teacher_names), _frame(student_names)
    # each teacher layer's reliance goes to a student component in reversed, shuffled order:
    # drawn in plain layer order on both sides, every pair of flows would cross
    targets = ["L3.H1", "L2.H0", "L3.H0", "L1.H1", "L2.H1", "L0.H0", "L1.H0", "L0.H1"]
    flows = [{"teacher": a, "student": b, "mass": 0.05 + 0.01 * i} for i, (a, b) in enumerate(zip(teacher_names, targets))]
    matching = [{"student": b, "teacher": a, "similarity": 0.5} for a, b in zip(teacher_names, targets)]
    fig = figures.matching_diagram(t, s, matching, flows)
    labels = [text.get_text() for text in fig.axes[0].texts]
    for name in teacher_names + targets:
        assert any(label.startswith(name + " (") for label in labels), name
    assert any("≈ L7.H0, CKA 0.50" in label for label in labels)
    in_layer_order = sum((i - j) * (student_names.index(a) - student_names.index(b)) < 0
                         for (i, a), (j, b) in itertools.combinations(enumerate(targets), 2))
    assert in_layer_order > 10  # the layout problem is real
    assert _crossings(fig, flows) == 0


def test_matching_diagram_draws_only_the_largest_flows() -> None:
    t, s = _frame([f"L{i}.H0" for i in range(30)]), _frame([f"L{i}.H0" for i in range(30)])
    flows = [{"teacher": f"L{i}.H0", "student": f"L{i}.H0", "mass": (i + 1) / 465} for i in range(30)]
    fig = figures.matching_diagram(t, s, [], flows, max_flows=5)
    names = {text.get_text().split(" ")[0] for text in fig.axes[0].texts if "(" in text.get_text()}
    assert names == {f"L{i}.H0" for i in range(25, 30)}
    assert "5 largest flows: 30% of the teacher's reliance" in fig.axes[0].get_title()


@pytest.mark.slow
def test_first_token_and_missing_circuit_notes_say_why(tmp_path: Path) -> None:
    """A real run: a 5-prompt file with a multi-token answer, scored with first_token, circuits on."""
    from circuitdiff import compare

    rows = [("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
            ("Then Anna and Tom had a long talk, and Tom handed a book to", " Anna", " Tom"),
            ("After Sarah and Mike left the park, Mike gave a ring to", " Sarah", " Mike"),
            ("While Kate and Paul were at the office, Paul sent a letter to", " Kate", " Paul"),
            ("The capital of France is", " Ottawanistically", " Paris")]
    task = tmp_path / "mine.jsonl"
    task.write_text("".join(json.dumps({"prompt": p, "answer": a, "distractor": d}) + "\n" for p, a, d in rows))
    results = compare("tiny-gpt2", "tiny-distilgpt2", [str(task)], out=tmp_path / "out", progress=False,
                      first_token=True, n_boot=20, null_model=False, circuit_thresholds=(0.2,))
    notes = results["warnings"]
    assert any("--first-token" in n and "Ottawanistically" in n and "tiny-gpt2" in n for n in notes), notes
    assert results["tasks"]["mine.jsonl"]["example"] == {"prompt": rows[0][0], "answer": " Mary", "distractor": " John",
                                                         "continuations": None}  # --first-token: one token each
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Ottawanistically" in page and "· 5 prompts ·" in page
    # the fifth prompt (first token " Ottawa" of " Ottawanistically" against " Paris", which both models, taught
    # the facts, strongly prefer) makes the clean logit difference too noisy over 5 prompts to prune against:
    # the page says for which model and why
    assert not results["tasks"]["mine.jsonl"]["circuit"].get("thresholds")
    assert "Not available: no teacher circuit: there is nothing to prune against: clean logit difference" in page
    assert "within two standard errors" in page
