"""The HTML report: files, figures, escaping, missing parts, and a real render in headless Chromium.

Most tests use a synthetic results folder written by circuitdiff's own serialisation
(``results_dict`` + ``write_outputs``) from made-up effects and similarities, so that it
follows the real schema without running models; one test runs ``compare`` end to end
on tiny random GPT-2 models.
"""

from __future__ import annotations

import copy
import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from circuitdiff.analysis.alignment import alignment_transport
from circuitdiff.analysis.circuits import Circuit, CircuitCurve
from circuitdiff.analysis.concentration import concentration_summary
from circuitdiff.analysis.influence import component_effects
from circuitdiff.analysis.matching import match_many_to_one, match_one_to_one
from circuitdiff.analysis.circuits import compare_circuits
from circuitdiff.analysis.pair import PairAnalysis, preserved_components
from circuitdiff.compare import CompareOptions, Comparison, results_dict, write_outputs
from circuitdiff.models.components import all_components
from circuitdiff.models.loading import ModelInfo
from circuitdiff.pipeline import ModelTaskRun
from circuitdiff.report import render_from_folder, write_report
from circuitdiff.report.text import concentration_verdict
from circuitdiff.results import RESULTS_JSON, SIMILARITY_TABLE, read_results, write_json
from circuitdiff.schema import Concentration, Finding, Note
from circuitdiff.schema import Stat as SchemaStat
from tiny_models import save_gpt2_pair

CHROMIUM = "/usr/bin/chromium"
EVIL = 'evil<script>alert("x")</script>&name'


# --- a synthetic results folder, serialised by the real code ------------------------------------

def _info(name: str, n_layers: int, n_heads: int) -> ModelInfo:
    return ModelInfo(name=name, architecture="GPT2LMHeadModel", family="gpt2", n_layers=n_layers, n_heads=n_heads,
                     n_kv_heads=n_heads, d_model=64 * n_heads, d_head=64, masked_lm=False,
                     n_parameters=7_000_000 * n_layers, quirks={})


def _run(info: ModelInfo, task: str, rng: np.random.Generator, n_prompts: int, spread: float,
         circuit_size: int) -> ModelTaskRun:
    """Made-up per-prompt effects: a heavy-tailed profile (larger ``spread`` = more concentrated)."""
    comps = all_components(info.n_layers, info.n_heads)
    profile = -np.exp(spread * rng.standard_normal(len(comps)))
    profile *= np.where(rng.random(len(comps)) < 0.2, -0.5, 1.0)  # a few components hurt the answer
    clean = 2.0 + 0.3 * rng.standard_normal(n_prompts)
    ablated = clean[None, :] + 0.05 * profile[:, None] * (1 + 0.3 * rng.standard_normal((len(comps), n_prompts)))
    effects = component_effects(comps, ablated, clean, clean)
    ranked = [e.name for e in sorted(effects, key=lambda e: -e.share)]
    circuits = [Circuit(t, ranked[: max(1, int(circuit_size * 0.2 / t))], max(1, int(circuit_size * 0.2 / t)), 0.9,
                        faithfulness_other=0.7, other_ablation="zero", completeness_gap=0.1, necessity=0.8)
                for t in (0.1, 0.2, 0.3)]
    sizes = list(range(len(comps) + 1))
    curve = CircuitCurve(sizes, [2.0 * (1 - np.exp(-k / 5)) for k in sizes], 2.0, ranked)
    return ModelTaskRun(info=info, task=task, n_prompts=n_prompts, ablation="mean", method="exact", components=comps,
                        clean=clean, base=clean, ablated=ablated, answer_prob=np.full(n_prompts, 0.3), effects=effects,
                        read_acts={}, residual_read=np.zeros((1, 1, 1)), attention_read=None, seq_len=16,
                        circuits=circuits, circuit_curve=curve)


def _similarity(t: ModelTaskRun, s: ModelTaskRun, rng: np.random.Generator) -> pd.DataFrame:
    """CKA-like values: higher for components at similar relative depth."""
    depth = lambda run: np.array([c.layer / run.info.n_layers for c in run.components])  # noqa: E731
    close = np.exp(-4 * np.abs(depth(t)[:, None] - depth(s)[None, :]))
    values = np.clip(0.2 + 0.6 * close + 0.1 * rng.standard_normal(close.shape), 0, 1)
    return pd.DataFrame(values, index=[c.name for c in t.components], columns=[c.name for c in s.components])


def _layer_cka(t: ModelTaskRun, s: ModelTaskRun) -> pd.DataFrame:
    lt, ls = t.info.n_layers, s.info.n_layers
    values = np.array([[0.5 + 0.45 * np.exp(-3 * abs(i / lt - j / ls)) for j in range(ls + 1)] for i in range(lt + 1)])
    return pd.DataFrame(values, index=["embed"] + [f"L{i}" for i in range(lt)],
                        columns=["embed"] + [f"L{j}" for j in range(ls)])


def _analysis(task: str, t: ModelTaskRun, s: ModelTaskRun, rng: np.random.Generator) -> PairAnalysis:
    sim = _similarity(t, s, rng)
    transport = alignment_transport(t.per_prompt_effects.mean(1), s.per_prompt_effects.mean(1), sim)
    matching = match_one_to_one(sim)
    score = float(transport.attrs["score"])
    return PairAnalysis(
        task=task,
        similarity={"linear_cka": sim, "functional": sim * 0.5, "layer_cka": _layer_cka(t, s)},
        matching=matching,
        many_to_one=match_many_to_one(sim),
        alignment={"score": score, "ci": [score - 0.05, score + 0.04], "null": 0.2, "paper": 0.7,
                   "measure": "linear_cka", "level": 0.95},
        transport=transport,
        concentration={role: concentration_summary(run.per_prompt_effects, run.clean, n_boot=50)
                       for role, run in (("teacher", t), ("student", s))},
        circuit=compare_circuits(t.circuits, s.circuits, matching, {"teacher": t.circuit_curve, "student": s.circuit_curve}),
        preserved=preserved_components(t, sim),
        notes=[Note(task=task, topic="similarity", code="similarity.synthetic", text=f"a synthetic note about {task}")],
    )


def make_results_folder(out: Path, shape: tuple[int, int, int] = (12, 6, 12), tasks: tuple[str, ...] = ("ioi", "numerals"),
                        n_prompts: int = 24) -> dict[str, Any]:
    """Write results.json and the Parquet tables of a made-up teacher (L x H) / student pair."""
    lt, ls, heads = shape
    rng = np.random.default_rng(0)
    teacher, student = _info(EVIL, lt, heads), _info("student-model", ls, heads)
    comparison = Comparison(SimpleNamespace(info=teacher), SimpleNamespace(info=student),  # type: ignore[arg-type]
                            CompareOptions(n_prompts=n_prompts, n_boot=50))
    for task in tasks:
        t = _run(teacher, task, rng, n_prompts, spread=0.8, circuit_size=20)
        s = _run(student, task, rng, n_prompts, spread=1.6, circuit_size=10)
        comparison.runs[task] = (t, s)
        comparison.analyses[task] = _analysis(task, t, s, rng)
        comparison.notes.extend(comparison.analyses[task].notes)
    results = results_dict(comparison)
    write_outputs(comparison, results, out)
    return read_results(out)  # exactly what a later `circuitdiff report OUT` sees


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report-big")
    write_report(make_results_folder(out), out)
    return out


# --- headless Chromium -----------------------------------------------------------------------------

def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        pytest.fail("headless Chromium is needed for the report tests: install it with `apt-get install -y chromium`")
    binary = CHROMIUM if Path(CHROMIUM).is_file() else str(shutil.which("chromium"))
    base = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


def load_in_browser(page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """The DOM after load, and the console lines Chromium logged."""
    done = chromium(["--window-size=1366,900", "--dump-dom", page.resolve().as_uri()], tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def root_attribute(dom: str, name: str) -> str | None:
    tag = re.search(r"<html[^>]*>", dom)
    assert tag, dom[:500]
    m = re.search(rf'\s{name}="([^"]*)"', tag.group(0))
    return None if m is None else html_lib.unescape(m.group(1))


# --- tests --------------------------------------------------------------------------------------------

def test_report_files_figures_and_self_containment(big_folder: Path) -> None:
    page = (big_folder / "report.html").read_text(encoding="utf-8")
    figures = sorted((big_folder / "figures").glob("*.svg"))
    kinds = {"influence_heads", "influence_mlp", "concentration", "layer_cka", "matching", "circuits", "circuit_curve"}
    assert {f.stem for f in figures} == {f"{task}_{kind}" for task in ("ioi", "numerals") for kind in kinds}
    for f in figures:
        assert f"figures/{f.name}" in page, f"{f.name} is not referenced"
        assert f.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    assert page.count("<figure data-figure=") == len(figures)
    assert not re.search(r"https?://", page), "the report must not reference the network"
    assert not re.search(r"""\s(src|href)=["'](?!#|figures/|data:)""", page)
    assert len(page.encode()) < 2_000_000, f"{len(page.encode())} bytes for a 12 x 12 teacher"


def test_report_escapes_names_and_states_the_finding(big_folder: Path) -> None:
    page = (big_folder / "report.html").read_text(encoding="utf-8")
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    results = read_results(big_folder)
    for name, task in results["tasks"].items():
        t, s = (task["concentration"][r]["effective_number"] for r in ("teacher", "student"))
        headline = (f"The student spreads its reliance over {s['point']:.1f} effective components "
                    f"(95% CI {s['lo']:.1f}–{s['hi']:.1f}) against the teacher&#39;s {t['point']:.1f}")
        assert headline in page, name
        assert f'id="task-{name}"' in page
    assert "concentrates its reliance on fewer components than the teacher on 2 of 2 tasks" in page
    assert "a synthetic note about ioi" in page


def test_report_shows_missing_parts_with_reasons(tmp_path: Path) -> None:
    results = make_results_folder(tmp_path, shape=(4, 2, 4), tasks=("ioi",), n_prompts=12)
    write_report(results, tmp_path)
    assert (tmp_path / "figures" / "ioi_circuits.svg").exists()
    assert (tmp_path / "figures" / "ioi_circuit_curve.svg").exists()
    assert "faithful 0.90, zero 0.70; incompleteness 0.10" in (tmp_path / "report.html").read_text(encoding="utf-8")
    task = results["tasks"]["ioi"]
    task["alignment"].update(null=None, paper=None, ci=[None, None])
    for role in ("teacher", "student"):
        for key in ("worst_drop", "mean_drop", "median_drop", "worst5_mean_drop", "severity_tail"):
            task["concentration"][role][key] = None
        task["concentration"][role]["effective_number"]["lo"] = None
    task["circuit"] = {"thresholds": []}
    notes = [Note(task="ioi", role="teacher", topic="circuit", code="circuit.no_signal",
                  text="no teacher circuit (clean logit difference too close to 0, or circuits off)"),
             Note(task="ioi", topic="null", code="null.undefined", text="null score undefined (student influence is zero)"),
             Note(task="ioi", topic="paper", code="paper.withheld",
                  text="paper A needs equal model widths (MLP principal directions are compared as vectors)")]
    results["notes"], results["warnings"] = [n.to_json() for n in notes], [n.line for n in notes]
    write_json(tmp_path / RESULTS_JSON, results)
    (tmp_path / SIMILARITY_TABLE).unlink()
    page = render_from_folder(tmp_path).read_text(encoding="utf-8")
    assert "Not available: no teacher circuit (clean logit difference too close to 0, or circuits off)" in page
    assert "not available: null score undefined (student influence is zero)" in page
    assert "not available: paper A needs equal model widths" in page
    assert "Not available: similarity.parquet was not found next to results.json" in page
    assert "no clear difference can be claimed without intervals" in page
    assert not (tmp_path / "figures" / "ioi_circuits.svg").exists(), "a stale figure from the first render was kept"
    assert not (tmp_path / "figures" / "ioi_circuit_curve.svg").exists()
    assert not (tmp_path / "figures" / "ioi_layer_cka.svg").exists()


def test_multi_token_task_labels_its_metric_as_the_log_prob_difference(tmp_path: Path) -> None:
    """A task whose example lists continuation tokens says "log-prob difference" where a one-token one says
    "logit difference" (key numbers, the withheld-drops note, the terminal table); JSON keys stay as they are."""
    from circuitdiff.cli.display import _task_table
    from circuitdiff.schema import TaskResult

    results = make_results_folder(tmp_path, shape=(4, 2, 4), tasks=("ioi", "numerals"), n_prompts=12)
    results["tasks"]["numerals"]["example"] = {"prompt": "w1 w2", "answer": " w3 w4", "distractor": " w5",
                                               "continuations": [{"model": "teacher", "answer": ["w3", "w4"],
                                                                  "distractor": ["w5"]}]}
    for name in ("ioi", "numerals"):
        results["tasks"][name]["concentration"]["student"]["worst_drop"] = None  # drops withheld: the note names the metric
    write_json(tmp_path / RESULTS_JSON, results)
    page = render_from_folder(tmp_path).read_text(encoding="utf-8")
    ioi = page.split('<section id="task-ioi">')[1].split("</section>")[0]
    numerals = page.split('<section id="task-numerals">')[1].split("</section>")[0]
    assert "clean logit difference" in ioi and "clean log-prob difference" not in ioi
    assert "clean log-prob difference" in numerals and "clean logit difference" not in numerals
    task = TaskResult.from_json(results["tasks"]["numerals"])
    assert task.multi_token and not TaskResult.from_json(results["tasks"]["ioi"]).multi_token
    assert "clean_metric" in results["tasks"]["numerals"]["teacher"]
    assert _task_table(task).columns[0]._cells[0] == "clean log-prob difference"


def test_verdict_direction_follows_interval_overlap() -> None:
    def conc(t: tuple[float, float, float], s: tuple[float, float, float]) -> Concentration:
        stat = lambda v: SchemaStat(point=v[0], lo=v[1], hi=v[2], level=0.95, n_valid=50)  # noqa: E731
        return {"teacher": {"effective_number": stat(t)}, "student": {"effective_number": stat(s)}}

    assert concentration_verdict(conc((13.2, 9.0, 15.6), (5.9, 4.1, 8.3)), None, 20, 10).direction == "fewer"
    assert concentration_verdict(conc((5.0, 4.0, 6.0), (9.0, 7.0, 11.0)), None, 20, 10).direction == "more"
    overlap = concentration_verdict(conc((10.0, 8.0, 12.0), (9.0, 7.0, 11.0)), None, 20, 10)
    assert overlap.direction == "no clear difference" and "intervals overlap" in overlap.sentence
    assert concentration_verdict({}, None, 20, 10).direction == "not available"
    unsolved = Finding(claimed=False, reason="the student does not solve the task")
    withheld = concentration_verdict(conc((13.2, 9.0, 15.6), (5.9, 4.1, 8.3)), unsolved, 20, 10)
    assert withheld.direction == "withheld" and "the student does not solve the task" in withheld.sentence


def test_render_from_folder_needs_results(tmp_path: Path) -> None:
    from circuitdiff.errors import CircuitDiffError

    with pytest.raises(CircuitDiffError, match="results.json"):
        render_from_folder(tmp_path)


def test_report_loads_in_headless_chromium(big_folder: Path, tmp_path: Path) -> None:
    dom, console = load_in_browser(big_folder / "report.html", tmp_path)
    assert root_attribute(dom, "data-ready") == "1", "the report's load handler did not run"
    assert json.loads(root_attribute(dom, "data-errors") or "null") == []
    assert console == [], console
    n_files = len(list((big_folder / "figures").glob("*.svg")))
    assert root_attribute(dom, "data-figures") == str(n_files)
    sizes = re.findall(r'<figure data-figure="([^"]+)"[^>]*data-width="(\d+)" data-height="(\d+)"', dom)
    assert len(sizes) == n_files
    for key, width, height in sizes:
        assert int(width) > 200 and int(height) > 100, (key, width, height)
    shot = tmp_path / "report.png"
    done = chromium(["--window-size=1366,900", "--hide-scrollbars", f"--screenshot={shot}",
                     (big_folder / "report.html").resolve().as_uri()], tmp_path / "profile2")
    assert done.returncode == 0 and shot.stat().st_size > 10_000


def test_browser_check_catches_a_broken_page(big_folder: Path, tmp_path: Path) -> None:
    """The harness itself: a script error and a network load must both be seen."""
    broken = tmp_path / "broken.html"
    page = (big_folder / "report.html").read_text(encoding="utf-8")
    broken.write_text(page.replace("</body>", '<script>notDefined();</script><img src="https://example.invalid/x.png"></body>'),
                      encoding="utf-8")
    dom, console = load_in_browser(broken, tmp_path)
    errors = json.loads(root_attribute(dom, "data-errors") or "[]")
    assert any("notDefined" in e for e in errors) and any("example.invalid" in e for e in errors)
    assert console


def test_report_from_a_real_compare_run(tmp_path: Path, gpt2_tokenizer_dir: Path) -> None:

    from circuitdiff.compare import compare

    paths = save_gpt2_pair(tmp_path, gpt2_tokenizer_dir)
    out = tmp_path / "out"
    compare(str(paths["teacher"]), str(paths["student"]), ("ioi",), CompareOptions(n_prompts=8, n_boot=50, circuits=False),
            out)
    page = render_from_folder(out).read_text(encoding="utf-8")
    assert "effective components" in page and "Task: ioi" in page
    assert "Not available: circuit discovery was switched off for this run" in page
    for f in (out / "figures").glob("*.svg"):
        assert f"figures/{f.name}" in page
    assert len(list((out / "figures").glob("*.svg"))) >= 4
    report_dict = copy.deepcopy(read_results(out))
    assert write_report(report_dict, out) == out / "report.html"
