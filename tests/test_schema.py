"""The results schema: the checked-in JSON Schema is the generated one, real output follows it,
older files load, notes are read by code, never by wording."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from circuitdiff.schema import SCHEMA_FILE, SCHEMA_VERSION, Note, Results, SchemaError, schema_text
from tiny_models import save_gpt2_pair


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, gpt2_tokenizer_dir: Path) -> Path:
    """A real comparison of two tiny GPT-2s with circuits, the null and edges on."""

    from circuitdiff.compare import CompareOptions, compare

    tmp = tmp_path_factory.mktemp("schema-run")
    paths = save_gpt2_pair(tmp, gpt2_tokenizer_dir)
    out = tmp / "out"
    options = CompareOptions(n_prompts=8, n_boot=20, n_null=1, edges="eap", circuit_thresholds=(0.2,))
    compare(str(paths["teacher"]), str(paths["student"]), ("ioi",), options, out, progress=False, report=False)
    return out


def _json(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_checked_in_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), "run: python -m circuitdiff.schema"


def test_real_results_follow_the_json_schema_and_round_trip(real_run: Path) -> None:
    data = _json(real_run)
    assert data["schema_version"] == SCHEMA_VERSION and list(data)[0] == "schema_version"
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.validate(data, schema)
    typed = Results.read(data)
    assert typed.to_json() == data
    assert typed.tasks["ioi"].teacher.edges is not None  # --edges output is part of the contract
    for record in (typed.tasks["ioi"].teacher, typed.tasks["ioi"].student):  # attribution against exact, 3 ways
        agreement = record.attribution_agreement
        assert agreement is not None and agreement.spearman == pytest.approx(record.attribution_spearman)
        assert agreement.n == len(record.components) and agreement.top_k == min(10, len(record.components))
    # every warning line is one of the structured notes, written as 0.1.0 wrote it
    assert data["warnings"] == list(dict.fromkeys(n.line for n in typed.notes)) and typed.notes
    # the schema rejects what the types reject: a string score, an unknown key
    bad = copy.deepcopy(data)
    bad["tasks"]["ioi"]["alignment"]["score"] = "high"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(SchemaError, match=r"tasks\.ioi\.alignment\.score"):
        Results.read(bad)
    bad = copy.deepcopy(data)
    bad["tasks"]["ioi"]["teacher"]["clean_metrc"] = 1.0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(SchemaError, match="clean_metrc"):
        Results.read(bad)


def test_results_of_version_0_1_0_still_load_and_render(real_run: Path, tmp_path: Path) -> None:
    from circuitdiff.report.render import render_from_folder

    old = _json(real_run)
    del old["schema_version"], old["notes"]  # what circuitdiff 0.1.0 wrote
    for name in ("results.json", "similarity.parquet", "effects_per_prompt.parquet", "components.parquet"):
        (tmp_path / name).write_bytes((real_run / name).read_bytes())
    (tmp_path / "results.json").write_text(json.dumps(old), encoding="utf-8")
    typed = Results.read(old)
    assert [n.line for n in typed.notes] == old["warnings"]
    assert all(n.task == "ioi" and n.topic == "legacy" for n in typed.notes)
    page = render_from_folder(tmp_path).read_text(encoding="utf-8")
    assert "Task: ioi" in page


def test_a_newer_schema_is_one_line_and_a_usage_exit(real_run: Path, tmp_path: Path) -> None:
    newer = {**_json(real_run), "schema_version": SCHEMA_VERSION + 1}
    (tmp_path / "results.json").write_text(json.dumps(newer), encoding="utf-8")
    command = Path(sys.executable).parent / "circuitdiff"
    run = subprocess.run([str(command), "report", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and f"schema_version {SCHEMA_VERSION + 1}" in lines[0] and "upgrade" in lines[0]


def test_report_reads_circuit_reasons_by_code_not_wording(real_run: Path) -> None:
    """A note worded like a circuit reason but on another topic is ignored; the circuit note is used whatever its words."""
    from circuitdiff.report.render import _circuit

    results = Results.read(_json(real_run))
    results.tasks["ioi"].circuit = {}
    results.notes = [
        Note(task="ioi", topic="legacy", code="legacy", text="no teacher circuit: words a reader must not trust"),
        Note(task="ioi", role="teacher", topic="circuit", code="circuit.no_signal", text="QQQ teacher reason"),
        Note(task="other", role="student", topic="circuit", code="circuit.off", text="ZZZ other task"),
    ]
    missing = _circuit(results, "ioi")["missing"]
    assert missing == "QQQ teacher reason"


def test_the_produced_notes_carry_role_topic_and_code(real_run: Path) -> None:
    """Both tiny random models prefer the distractor on ioi: no circuit for either, for that reason."""
    notes = Results.read(_json(real_run)).notes
    circuit = {(n.role, n.code) for n in notes if n.topic == "circuit"}
    assert circuit == {("teacher", "circuit.no_signal"), ("student", "circuit.no_signal")}
    assert all(n.code.split(".")[0] == n.topic for n in notes)


def test_the_summary_and_the_report_show_the_agreement_figures(real_run: Path) -> None:
    from rich.console import Console

    from circuitdiff.cli.display import print_summary
    from circuitdiff.report.render import _numbers

    typed = Results.read(_json(real_run))
    task = typed.tasks["ioi"]
    a = task.teacher.attribution_agreement
    cell = " / ".join("—" if v is None else f"{v:.2f}" for v in (a.spearman, a.top_k_spearman, a.weighted_correlation))
    console = Console(record=True, width=200)
    print_summary(console, typed, real_run)
    assert f"attribution vs exact (all / top {a.top_k} / weighted): teacher {cell}" in console.export_text()
    row = next(r for r in _numbers(task) if r["label"].startswith("attribution vs exact"))
    assert row["teacher"] == cell
