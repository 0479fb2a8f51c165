"""``circuitdiff reproduce``: the study's plan, its table beside the published figures, resuming.

The study's Hub models are not reachable here, so ``--pairs study`` runs against tiny
random stand-ins saved under the study's model names (``--model-root``); only a minimal
subset of its 24 jobs runs. ``--pairs builtin`` runs for real on the shipped pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from circuitdiff.cli.main import _mount_reproduce, run_app
from circuitdiff.errors import CircuitDiffError, ModelLoadError
from circuitdiff.reproduce import make_plan, published, study_pairs
from circuitdiff.reproduce.plan import STUDY_THRESHOLDS, builtin_study_pairs
from circuitdiff.reproduce.table import COLUMNS, reproduce_frame
from circuitdiff.sweep.jobs import RunSettings

_mount_reproduce()
STUDY_IDS = {
    "gpt2": ("openai-community/gpt2", "distilbert/distilgpt2"),
    "bert": ("google-bert/bert-base-uncased", "distilbert/distilbert-base-uncased"),
    "llama": ("meta-llama/Llama-3.1-8B", "nvidia/Llama-3.1-Minitron-4B-Depth-Base"),
}


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-ins saved under the study's Hub ids: the shipped (trained) tiny pairs for GPT-2 and BERT,
    tiny random Llamas with a word-level tokenizer (which has no digits, so numerals cannot be encoded)."""
    import shutil

    from circuitdiff.models.loading import builtin_model_dir
    from tiny_models import save_tiny

    root = tmp_path_factory.mktemp("hub")
    for builtin, hub_id in zip(("tiny-gpt2", "tiny-distilgpt2", "tiny-bert", "tiny-distilbert"),
                               (*STUDY_IDS["gpt2"], *STUDY_IDS["bert"])):
        shutil.copytree(builtin_model_dir(builtin), root / hub_id)
    save_tiny("llama", root / STUDY_IDS["llama"][0], n_layers=2)
    save_tiny("llama", root / STUDY_IDS["llama"][1], seed=1, n_layers=1)
    return root


# --- the plan, no model runs -------------------------------------------------------------------

def test_study_plan_has_the_protocol(model_root: Path) -> None:
    plan = make_plan(study_pairs(model_root), RunSettings(dtype="float32"), n_prompts=64)
    assert len(plan.jobs) == 4 * 3 * 2  # pairs x the study's three tasks x mean and zero
    by_pair: dict[str, list] = {}
    for rj in plan.jobs:
        by_pair.setdefault(rj.pair.name, []).append(rj)
        assert rj.thresholds == STUDY_THRESHOLDS == (0.10, 0.15, 0.20, 0.25, 0.30)
        assert {rj.job.ablation for rj in by_pair[rj.pair.name]} <= {"mean", "zero"}
        options = dict(rj.job.options)
        assert options["n_prompts"] == (249 if rj.job.task == "facts" else 64)  # facts: the whole table
        assert options["null_model"] is True and options["n_null"] == 10
    llama = by_pair["llama8b-minitron4b"]
    assert {(rj.settings.dtype, rj.settings.device_map) for rj in llama} == {("bfloat16", "auto")}
    others = [rj for name, jobs in by_pair.items() if name != "llama8b-minitron4b" for rj in jobs]
    assert {(rj.settings.dtype, rj.settings.device_map) for rj in others} == {("float32", None)}
    for jobs in by_pair.values():  # the study's own tasks everywhere: split answers are teacher-forced
        assert {rj.job.task for rj in jobs} == {"ioi", "numerals", "facts"}
    kinds = {name: jobs[0].pair.kinds for name, jobs in by_pair.items()}
    assert kinds["bert-distilbert"] == ("masked", "masked") and kinds["control-gpt2-distilbert"] == ("causal", "masked")
    control = by_pair["control-gpt2-distilbert"][0].pair
    assert (control.teacher, control.student) == (str(model_root / STUDY_IDS["gpt2"][0]),
                                                   str(model_root / STUDY_IDS["bert"][1]))


def test_model_root_maps_hub_ids_to_folders_and_leaves_the_rest(tmp_path: Path) -> None:
    (tmp_path / "openai-community" / "gpt2").mkdir(parents=True)
    (tmp_path / "distilgpt2").mkdir()  # DIR/<name> works too
    pairs = {p.name: p for p in study_pairs(tmp_path)}
    main = pairs["gpt2-distilgpt2"]
    assert main.teacher == str(tmp_path / "openai-community" / "gpt2")
    assert main.student == str(tmp_path / "distilgpt2")
    assert pairs["bert-distilbert"].teacher == "google-bert/bert-base-uncased"  # absent here: the Hub id
    assert study_pairs(None)[2].teacher == "meta-llama/Llama-3.1-8B"


def test_subsets_and_unknown_names() -> None:
    plan = make_plan(study_pairs(), RunSettings(), only=["gpt2-distilgpt2"], tasks=["numerals"], ablations=["zero"])
    assert [(rj.pair.name, rj.job.task, rj.job.ablation) for rj in plan.jobs] == [("gpt2-distilgpt2", "numerals", "zero")]
    llama = make_plan(study_pairs(), RunSettings(), only=["llama8b-minitron4b"], tasks=["numerals"])
    assert {rj.protocol_task for rj in llama.jobs} == {rj.job.task for rj in llama.jobs} == {"numerals"}
    for kw in ({"only": ["gpt3"]}, {"tasks": ["sst2"]}, {"ablations": ["resample"]}):
        with pytest.raises(CircuitDiffError, match="unknown"):
            make_plan(study_pairs(), RunSettings(), **kw)


def test_builtin_pairs_and_the_smollm2_row(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import circuitdiff.models.loading as loading

    pairs, skipped = builtin_study_pairs(None)
    assert [(p.name, p.teacher, p.student, p.study_pair) for p in pairs] == [
        ("tiny-gpt2", "tiny-gpt2", "tiny-distilgpt2", "main"),
        ("tiny-bert", "tiny-bert", "tiny-distilbert", "bidirectional"),
        ("control-tiny-gpt2-tiny-distilbert", "tiny-gpt2", "tiny-distilbert", "control")]
    assert len(skipped) == 1 and skipped[0][0] == "smollm2-135m-distilled"
    monkeypatch.setattr(loading, "packaged_gguf", lambda name: tmp_path / "x.gguf")
    pairs, skipped = builtin_study_pairs(str(tmp_path))
    assert not skipped and pairs[-1].teacher == "smollm2-135m" and pairs[-1].student == str(tmp_path)
    assert dict(pairs[-1].tasks) == {"ioi": "ioi", "numerals": "numerals", "facts": "facts"}
    assert "--smollm2-student" in builtin_study_pairs(None)[1][0][1]
    def missing(name: str) -> None:  # what loading.packaged_gguf does without the weights package
        raise ModelLoadError(f"'{name}' needs its weights package")

    monkeypatch.setattr(loading, "packaged_gguf", missing)
    assert "not installed" in builtin_study_pairs(str(tmp_path))[1][0][1]


def test_published_figures_are_the_studys() -> None:
    assert (published("main", "ioi", "paper_alignment", "pair").low, published("main", "facts", "paper_alignment", "pair").high) == (0.88, 0.95)
    assert published("bidirectional", "numerals", "paper_alignment", "pair").text == "0.82–0.85"
    assert published("control", "ioi", "paper_alignment", "pair").low == 0.72
    assert published("larger", "ioi", "paper_alignment", "pair") is None  # the study gives no A for Llama
    assert published("main", "numerals", "worst_head_drop_pct", "student").low == 104
    assert published("main", "numerals", "worst_head_drop_pct", "teacher").low == 47
    assert published("main", "numerals", "mean_head_drop_pct", "student").low == 7.3
    assert published("main", "numerals", "mean_head_drop_pct", "teacher").low == 1.4
    assert published("main", "numerals", "circuit_heads", "teacher", 0.2).low == 14
    assert published("main", "numerals", "circuit_mlps", "student", 0.2).low == 6
    assert published("main", "numerals", "circuit_heads", "teacher", 0.1) is None  # published at T = 0.2 only
    assert published("main", "ioi", "worst_head_drop_pct", "student") is None  # a numerals figure
    assert published("bidirectional", "numerals", "worst_head_drop_pct", "student") is None


# --- runs --------------------------------------------------------------------------------------

def _cli(*args: str) -> int:
    return run_app(["reproduce", *args])


def test_dry_run_prints_the_plan_without_loading(model_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("--pairs", "study", "--model-root", str(model_root), "--dry-run") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("pair=")]
    assert len(lines) == 24
    llama = [line for line in lines if "pair=llama8b-minitron4b" in line]
    assert len(llama) == 6 and all("dtype=bfloat16 device_map=auto" in line for line in llama)
    assert all("thresholds=0.1,0.15,0.2,0.25,0.3" in line for line in lines)


@pytest.mark.parametrize(("args", "needle"), [
    (("--pairs", "all"), "pair set 'all'"),
    (("--pairs", "builtin", "--model-root", "."), "--model-root"),
    (("--pairs", "study", "--model-root", "/no/such/dir"), "/no/such/dir"),
    (("--smollm2-student", "/no/such/student"), "/no/such/student"),
    (("--task", "sst2", "--dry-run"), "sst2"),
    (("--n-prompts", "1"), "--n-prompts"),
    (("--thresholds", "0.2,1.5"), "thresholds"),
])
def test_usage_errors_are_one_line_exit_2(args: tuple[str, ...], needle: str, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    assert _cli(*args, "--out", str(tmp_path / "o")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err


def _drops(folder: Path, role: str) -> tuple[float, float]:
    """Worst and mean per-head drop computed here from results.json's plain effects: -100 effect / clean."""
    entry = next(iter(json.loads((folder / "results.json").read_text())["tasks"].values()))[role]
    heads = np.array([c["effect"] for c in entry["components"] if c["kind"] == "head"])
    drops = -100.0 * heads / entry["clean_metric"]
    return float(drops.max()), float(drops.mean())


def test_study_subset_runs_and_its_table_stands_beside_the_published(model_root: Path, tmp_path: Path,
                                                                       one_torch_thread: None) -> None:
    out = tmp_path / "study"
    code = _cli("--pairs", "study", "--model-root", str(model_root), "--only", "gpt2-distilgpt2",
                "--only", "llama8b-minitron4b", "-t", "numerals", "--ablation", "mean", "--n-prompts", "8",
                "--n-boot", "20", "--n-null", "0", "--thresholds", "0.2", "--no-report", "--out", str(out))
    assert code == 0
    table = pd.read_parquet(out / "reproduce.parquet")
    csv = pd.read_csv(out / "reproduce.csv")
    assert tuple(table.columns) == tuple(csv.columns) == COLUMNS and len(csv) == len(table)
    gpt2 = table[table["pair"] == "gpt2-distilgpt2"].set_index(["figure", "model"])
    folder = out / gpt2["job"].iloc[0]
    results = json.loads((folder / "results.json").read_text())["tasks"]["numerals"]
    assert gpt2.loc[("paper_alignment", "pair"), "published"] == "0.88–0.95"
    assert gpt2.loc[("paper_alignment", "pair"), "circuitdiff"] == pytest.approx(results["alignment"]["paper"])
    assert gpt2.loc[("alignment", "pair"), "circuitdiff"] == pytest.approx(results["alignment"]["score"])
    for role, worst_pub, mean_pub in (("teacher", 47, 1.4), ("student", 104, 7.3)):
        worst, mean = _drops(folder, role)
        assert gpt2.loc[("worst_head_drop_pct", role), "published_low"] == worst_pub
        assert gpt2.loc[("mean_head_drop_pct", role), "published_low"] == mean_pub
        for figure, value in (("worst_head_drop_pct", worst), ("mean_head_drop_pct", mean)):
            row = gpt2.loc[(figure, role)]
            assert row["status"] == "computed" and row["circuitdiff"] == pytest.approx(value), (figure, role)
        heads, mlps = (gpt2.loc[(f"circuit_{k}", role), "circuitdiff"] for k in ("heads", "mlps"))
        size = results["circuit"]["thresholds"][0][role]["size"]
        assert heads + mlps == size and heads == sum(".H" in n for n in results["circuit"]["thresholds"][0][role]["components"])
    assert pd.isna(gpt2.loc[("alignment", "pair"), "above_chance"])  # --n-null 0: no verdict, none invented
    llama = table[table["pair"] == "llama8b-minitron4b"]  # word-level stand-in tokenizer: no digits, numerals cannot encode
    assert set(llama["status"]) == {"failed"} and llama["reason"].str.contains("numerals.*no tokens").all()
    assert llama["circuitdiff"].isna().all()
    md = (out / "reproduce.md").read_text()
    assert "| gpt2-distilgpt2 | numerals | mean | 8 |" in md and "47 / ≈104" in md and "14+11 / ≈7+6 (all)" in md
    assert "report.html" not in (out / "reproduce.html").read_text()  # --no-report: no links to missing pages


def test_a_crashing_job_is_a_failed_row_not_a_crashed_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import circuitdiff.reproduce.run as run

    calls = []

    def broken(job, out, settings):  # noqa: ANN001, ANN202
        calls.append(job.pair.name)
        raise RuntimeError("cross-family comparison not supported yet")

    monkeypatch.setattr(run, "run_job", broken)
    plan = make_plan(builtin_study_pairs(None)[0], RunSettings(), tasks=["ioi"], ablations=["mean"])
    before = reproduce_frame(tmp_path, plan.jobs)  # planned, nothing run yet: every figure says so
    assert set(before["status"]) == {"not run"} and before["circuitdiff"].isna().all()
    outcome = run.run_plan(plan, tmp_path, title="t")
    assert len(calls) == 3 and len(outcome.failed) == 3
    control = outcome.table[outcome.table["pair"] == "control-tiny-gpt2-tiny-distilbert"]
    assert set(control["status"]) == {"failed"}
    assert control["reason"].str.contains("RuntimeError.*cross-family comparison not supported yet").all()
    assert control["circuitdiff"].isna().all() and (control["figure"] == "paper_alignment").any()
    assert control.loc[control["figure"] == "paper_alignment", "published"].iloc[0] == "0.72"
    other = make_plan(builtin_study_pairs(None)[0], RunSettings(), tasks=["ioi"], ablations=["mean"], n_prompts=32)
    assert set(reproduce_frame(tmp_path, other.jobs)["status"]) == {"not run"}  # those failures were other jobs'


@pytest.mark.slow
def test_builtin_runs_for_real_and_resumes(tmp_path: Path, one_torch_thread: None,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "builtin"
    args = ("--pairs", "builtin", "-t", "numerals", "--ablation", "mean", "--n-prompts", "8", "--n-boot", "20",
            "--n-null", "1", "--thresholds", "0.2", "--no-report", "--out", str(out))
    assert _cli(*args) == 0
    table = pd.read_parquet(out / "reproduce.parquet")
    assert list(dict.fromkeys(table["pair"])) == ["tiny-gpt2", "tiny-bert", "control-tiny-gpt2-tiny-distilbert"]
    assert not (table["status"] == "failed").any() and not (table["status"] == "not run").any()
    for pair, pub in (("tiny-gpt2", "0.88–0.95"), ("tiny-bert", "0.82–0.85"), ("control-tiny-gpt2-tiny-distilbert", "0.72")):
        row = table[(table["pair"] == pair) & (table["figure"] == "paper_alignment")].iloc[0]
        assert row["published"] == pub
        results = json.loads((out / row["job"] / "results.json").read_text())
        paper = results["tasks"]["numerals"]["alignment"]["paper"]
        if paper is None:  # withheld: the reason is compare's own note, never a number
            assert row["status"] == "withheld" and pd.isna(row["circuitdiff"])
            assert any(n["topic"] in ("paper", "metric") and n["text"] in row["reason"] for n in results["notes"])
        else:
            assert row["status"] == "computed" and row["circuitdiff"] == pytest.approx(paper)
    capsys.readouterr()
    assert _cli(*args) == 0  # everything finished: reused, same table
    assert capsys.readouterr().out.count("finished earlier, reused") == 3
    assert pd.read_parquet(out / "reproduce.parquet").equals(table)


def test_help_does_not_import_torch() -> None:
    """``reproduce --help`` answers at once, like every other command's help."""
    import subprocess
    import sys

    probe = ("import sys; sys.argv = ['circuitdiff', 'reproduce', '--help']\n"
             "from circuitdiff.cli.main import main\n"
             "try:\n    main()\nexcept SystemExit as exc:\n"
             "    print('EXIT', exc.code, sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "EXIT 0 []", proc.stdout[-2000:] + proc.stderr
    assert "--model-root" in proc.stdout and "--dry-run" in proc.stdout
