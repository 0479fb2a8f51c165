"""Edge-circuit figures and the kept/merged/dropped/added classification."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from circuitdiff.analysis.edges import compare_edge_circuits
from circuitdiff.analysis.matching import Match
from circuitdiff.compare import CompareOptions, compare
from circuitdiff.report.edge_figures import edge_circuit_graphs, layered_layout


def test_merged_dropped_added_on_a_hand_computed_example() -> None:
    # Student L0.H0 is the one-to-one match of teacher L0.H0 and the many-to-one (most similar) of L0.H1,
    # so the student edge L0.H0 -> L1.MLP stands for both teacher edges L0.H0 -> L1.MLP and L0.H1 -> L1.MLP.
    one_to_one = [Match("L0.H0", "L0.H0", 0.9), Match("L1.MLP", "L1.MLP", 0.8)]
    many_to_one = [Match("L0.H0", "L0.H1", 0.95), Match("L1.MLP", "L1.MLP", 0.8)]
    teacher = [["L0.H0", "L1.MLP", "input"], ["L0.H1", "L1.MLP", "input"], ["L0.H0", "L1.H0", "q"],
               ["L1.MLP", "logits", "input"]]
    student = [["L0.H0", "L1.MLP", "input"], ["L0.H0", "logits", "input"], ["L1.MLP", "logits", "input"]]

    def circuits(edges: list[list[str]]) -> dict:
        return {"circuits": [{"rule": "top-k", "parameter": 20.0, "method": "exact", "edges": edges,
                              "size": len(edges), "faithfulness": 1.0, "completeness": 1.0}]}

    (c,) = compare_edge_circuits(circuits(teacher), circuits(student), one_to_one, many_to_one)
    assert c["merged"] == [{"student": ["L0.H0", "L1.MLP", "input"],
                            "teacher": [["L0.H0", "L1.MLP", "input"], ["L0.H1", "L1.MLP", "input"]]}]
    assert c["kept"] == [["L1.MLP", "logits", "input"]]
    assert c["dropped"] == [["L0.H0", "L1.H0", "q"]]
    assert c["added"] == [["L0.H0", "logits", "input"]]
    # overlap through the one-to-one matching only: 2 shared of 5 distinct edges
    assert c["overlap_jaccard"] == pytest.approx(2 / 5) and c["teacher_recall"] == pytest.approx(2 / 4)
    # without the many-to-one pairs nothing merges and the L0.H1 edge is dropped
    (plain,) = compare_edge_circuits(circuits(teacher), circuits(student), one_to_one)
    assert plain["merged"] == [] and ["L0.H1", "L1.MLP", "input"] in plain["dropped"]


def test_layout_puts_student_components_on_their_matched_teacher_places() -> None:
    teacher = ["L0.H1", "L2.H3", "L3.MLP", "logits"]
    student = ["L0.H1", "L1.H0", "L1.MLP", "L1.H2", "logits"]
    matching = {"L0.H1": "L0.H1", "L1.H0": "L2.H3", "L1.MLP": "L3.MLP"}  # L1.H2 unmatched
    pos = layered_layout(teacher, student, matching)
    t, s = pos["teacher"], pos["student"]
    for st, te in matching.items():
        assert s[st] == t[te]
    assert t["L2.H3"][1] == 2.0 and t["L3.MLP"][1] == 3.0 and t["logits"][1] == 4.0 == s["logits"][1]
    # unmatched L1.H2: the student's last layer (1 of 0..1) lands on the teacher's last row (3 of 0..3)
    assert s["L1.H2"][1] == 3.0 and s["L1.H2"] not in [s[n] for n in matching]
    # used columns squeezed: heads 1, 2, 3 then the MLP column
    assert t["L0.H1"][0] == 0.0 and s["L1.H2"][0] == 1.0 and t["L2.H3"][0] == 2.0 and t["L3.MLP"][0] == 3.0


def test_grouped_query_kv_receivers_sit_right_of_the_mlp_column_in_both_panels() -> None:
    """Llama-style receivers ``L2.KV1`` (a key/value head, no query head of that name) get their own columns,
    after the MLP column, in key/value-head order; an unmatched student KV node lands on its relative depth."""
    teacher = ["L0.H4", "L2.KV1", "L2.KV0", "L2.MLP", "L3.H8", "logits"]
    student = ["L0.H4", "L1.KV1", "L1.H2", "logits"]
    matching = {"L0.H4": "L0.H4", "L1.H2": "L3.H8"}
    pos = layered_layout(teacher, student, matching)
    t, s = pos["teacher"], pos["student"]
    # grid columns: heads 4 and 8, the MLP column 9 (one past the largest head), KV g at 10 + g; squeezed 0..4
    assert t["L0.H4"] == (0.0, 0.0) and t["L3.H8"] == (1.0, 3.0) and t["L2.MLP"] == (2.0, 2.0)
    assert t["L2.KV0"] == (3.0, 2.0) and t["L2.KV1"] == (4.0, 2.0)
    # the student's last layer (1 of 0..1) is the teacher's last row (3 of 0..3); the column is its own KV column
    assert s["L1.KV1"] == (4.0, 3.0) and s["L1.H2"] == t["L3.H8"]
    assert t["logits"] == s["logits"] == (2.0, 4.0)  # above the last layer, centred on the 5 used columns

    def circuit(edges: list[list[str]]) -> dict:
        return {"records": [{"sender": a, "receiver": b, "channel": c, "effect": 0.5, "method": "eap-ig"}
                            for a, b, c in edges],
                "circuits": [{"rule": "top-k", "parameter": 20.0, "method": "eap-ig", "edges": edges}]}

    t_edges = [["L0.H4", "L2.KV1", "k"], ["L0.H4", "L2.KV0", "v"], ["L2.MLP", "logits", "input"]]
    s_edges = [["L0.H4", "L1.KV1", "v"], ["L1.H2", "logits", "input"]]
    summary = {"size": 3, "faithfulness": 1.0}
    task = {"teacher": {"edges": circuit(t_edges)}, "student": {"edges": circuit(s_edges)},
            "matching": [{"student": a, "teacher": b} for a, b in matching.items()],
            "edge_circuits": [{"rule": "top-k", "parameter": 20.0, "method": "eap-ig", "teacher": summary,
                               "student": {**summary, "size": 2}, "dropped": [], "added": []}]}
    fig = edge_circuit_graphs(task)
    assert fig is not None
    drawn = [{t.get_text(): t.get_position() for t in ax.texts} for ax in fig.axes]
    assert drawn[0]["L2.KV1"] == (4.0, 2.0) and drawn[0]["L2.KV0"] == (3.0, 2.0)
    assert drawn[1]["L1.KV1"] == (4.0, 3.0) and "L2.MLP" not in drawn[1]


@pytest.mark.parametrize("edges", ["eap", "none"])
def test_report_draws_edge_circuits_or_says_why_not(edges: str, tmp_path: Path) -> None:
    options = CompareOptions(n_prompts=8, n_boot=20, circuits=False, null_model=False, edges=edges)
    compare("tiny-gpt2", "tiny-distilgpt2", ["ioi"], options, out=tmp_path, resume=False)
    page = (tmp_path / "report.html").read_text()
    assert "<h3>Edge circuits</h3>" in page
    svg = tmp_path / "figures" / "ioi_edge_circuits.svg"
    if edges == "none":
        assert not svg.exists() and "Not available: edges were not measured in this run (--edges none)" in page
        return
    figure = re.search(r'<figure data-figure="ioi_edge_circuits">(.*?)</figure>', page, re.S)
    assert figure is not None and svg.exists()
    text = figure.group(1)
    for label in ("logits", "q input", "k input", "v input", "teacher:", "student:"):
        assert label in text
    assert "merged (teacher edges" in page and "dropped (teacher edges)" in page
