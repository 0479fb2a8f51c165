"""Trajectories: the lab's step-N snapshots, one row per checkpoint, reuse, and ground truths.

Ground truths: the last row is what a plain ``compare`` of that checkpoint says; a student
initialised from a teacher whose skipped layers write nothing computes what the teacher
computes, so its step-0 row is the teacher-vs-subset comparison with a subset built here by
hand (state-dict surgery, not the lab's code).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as T

import circuitdiff.compare as compare_module
from circuitdiff.compare import compare
from circuitdiff.lab import DataRecipe, DistillRecipe, OptimRecipe, distil, init_student
from circuitdiff.lab.checkpoint import snapshot_folder
from circuitdiff.models.loading import load_model, resolve
from circuitdiff.options import CompareOptions
from circuitdiff.trajectory import find_checkpoints, run_trajectory
from circuitdiff.trajectory.checkpoints import TrajectoryError
from circuitdiff.trajectory.report import write_trajectory_report

pytestmark = pytest.mark.usefixtures("one_torch_thread")
OPTIONS = CompareOptions(n_prompts=12, n_boot=50, n_null=2, circuit_thresholds=(0.2,))
DATA = DataRecipe(tasks=("ioi", "numerals"), task_prompts_per_task=16, task_prompts=(), corpus_max_chunks=40)


def _recipe(steps: int, **kw: object) -> DistillRecipe:
    return DistillRecipe(data=DATA, optim=OptimRecipe(steps=steps, batch_size=4, warmup_steps=1, save_every=2), **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 steps from the shipped tiny GPT-2 with the circuit loss on, kept at steps 0, 2 and 4."""
    out = tmp_path_factory.mktemp("run") / "student"
    recipe = _recipe(4, alpha_circuit=0.5, circuit_tasks=("ioi",), circuit_prompts=8)
    result = distil("tiny-gpt2", recipe, out, progress=False, eval_prompts=8, snapshots=True)
    assert result.completed
    return out


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in T.AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}


def test_snapshots_are_loadable_model_folders_in_step_order(run: Path) -> None:
    checkpoints = find_checkpoints([run])
    assert [c.step for c in checkpoints] == [0, 2, 4]
    assert [c.folder.name for c in checkpoints] == ["step-000000", "step-000002", "step-000004"]
    for c in checkpoints:
        assert load_model(str(c.folder)).adapter.n_layers == 3
    teacher = T.AutoModelForCausalLM.from_pretrained(resolve("tiny-gpt2")[0])
    initial = init_student(teacher).state_dict()
    step0 = _weights(snapshot_folder(run, 0))
    assert all(torch.equal(step0[k], v.float()) for k, v in initial.items())  # step 0 is the initialisation
    final, last = _weights(run), _weights(snapshot_folder(run, 4))
    assert all(torch.allclose(final[k], last[k], atol=2e-3) for k in final)  # the saved model is float16 of it
    assert not torch.equal(step0["transformer.h.1.mlp.c_fc.weight"], last["transformer.h.1.mlp.c_fc.weight"])


def test_the_card_records_the_circuit_loss(run: Path) -> None:
    card = (run / "README.md").read_text()
    assert "circuit loss (weight 0.5)" in card and "alpha_circuit: `0.5`" in card
    assert (run / "circuit_targets.json").is_file()


@pytest.fixture(scope="module")
def trajectory(run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("traj")
    return out, run_trajectory("tiny-gpt2", [run], ["ioi"], out, OPTIONS, progress=False)


def test_one_row_per_checkpoint_and_task(trajectory: tuple[Path, object]) -> None:
    out, table = trajectory
    assert list(table["step"]) == [0, 2, 4] and set(table["task"]) == {"ioi"}
    assert (out / "trajectory.parquet").is_file()
    for _, row in table.iterrows():
        assert row["alignment_lo"] <= row["alignment"] <= row["alignment_hi"]
        assert row["verdict"] in ("above chance", "not above chance") and row["null"] is not None
    page = write_trajectory_report(table, out, "t")
    assert "<svg" in page.read_text() and (out / "figures" / "trajectory.svg").is_file()


def test_last_row_equals_a_plain_compare(run: Path, trajectory: tuple[Path, object], tmp_path: Path) -> None:
    _, table = trajectory
    plain = compare("tiny-gpt2", str(snapshot_folder(run, 4)), ["ioi"], OPTIONS, progress=False)["tasks"]["ioi"]
    last = table[table["step"] == 4].iloc[0]
    assert last["alignment"] == plain["alignment"]["score"]
    assert [last["alignment_lo"], last["alignment_hi"]] == plain["alignment"]["ci"]
    assert last["null"] == plain["alignment"]["null"]
    assert last["student_accuracy"] == plain["student"]["accuracy"]
    assert last["student_clean_metric"] == plain["student"]["clean_metric"]
    assert last["student_effective_number"] == plain["concentration"]["student"]["effective_number"]["point"]
    assert last["circuit_overlap"] == plain["circuit"]["overlap_jaccard"]


def test_rerun_reuses_finished_checkpoints(run: Path, trajectory: tuple[Path, object],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out, table = trajectory
    calls: list[str] = []
    real = compare_module.compare

    def spy(teacher: object, student: str, *args: object, **kwargs: object) -> dict:
        calls.append(student)
        return real(teacher, student, *args, **kwargs)

    monkeypatch.setattr(compare_module, "compare", spy)
    again = run_trajectory("tiny-gpt2", [run], ["ioi"], out, OPTIONS, progress=False)
    assert calls == [] and again.equals(table)
    (out / "steps" / "step-000002" / "done.json").unlink()  # as if interrupted while comparing step 2
    again = run_trajectory("tiny-gpt2", [run], ["ioi"], out, OPTIONS, progress=False)
    assert calls == [str(snapshot_folder(run, 2))] and again.equals(table)


def test_bad_run_folder_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(TrajectoryError, match="holds no checkpoints"):
        find_checkpoints([tmp_path])


SKIPPED = (1, 3, 5)


def _silenced_teacher(folder: Path) -> Path:
    """The shipped tiny GPT-2 with layers 1, 3, 5 writing nothing (attention and MLP output projections zeroed)."""
    source = resolve("tiny-gpt2")[0]
    model = T.AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        for i in SKIPPED:
            for proj in (model.transformer.h[i].attn.c_proj, model.transformer.h[i].mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
    model.save_pretrained(folder)
    T.AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def _subset_by_hand(teacher_dir: Path, folder: Path) -> Path:
    """Layers 0, 2, 4 of the teacher in a 3-layer GPT-2, copied key by key."""
    teacher = T.AutoModelForCausalLM.from_pretrained(teacher_dir)
    config = T.GPT2Config.from_pretrained(teacher_dir)
    config.n_layer = 3
    subset = T.GPT2LMHeadModel(config)
    rename = {f"transformer.h.{i}.": f"transformer.h.{j}." for j, i in enumerate((0, 2, 4))}
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith("transformer.h."):
            prefix = ".".join(key.split(".")[:3]) + "."
            if prefix in rename:
                state[rename[prefix] + key[len(prefix):]] = value
        else:
            state[key] = value
    subset.load_state_dict(state)
    subset.save_pretrained(folder)
    T.AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(folder)
    return folder


def test_step_zero_of_a_silenced_teacher_is_the_teacher_vs_subset_result(tmp_path: Path) -> None:
    teacher = _silenced_teacher(tmp_path / "teacher")
    run = tmp_path / "student"
    distil(teacher, _recipe(2, layers=(0, 2, 4)), run, progress=False, eval_prompts=4, snapshots=True)
    table = run_trajectory(str(teacher), [run], ["ioi"], tmp_path / "traj", OPTIONS, progress=False)
    step0 = table[table["step"] == 0].iloc[0]
    subset = compare(str(teacher), str(_subset_by_hand(teacher, tmp_path / "subset")), ["ioi"], OPTIONS,
                     progress=False)["tasks"]["ioi"]
    assert step0["alignment"] == pytest.approx(subset["alignment"]["score"], abs=1e-9)
    assert step0["student_clean_metric"] == pytest.approx(subset["student"]["clean_metric"], abs=1e-9)
    # and the subset computes what the silenced teacher computes: same behaviour, same reliance
    assert step0["student_clean_metric"] == pytest.approx(step0["teacher_clean_metric"], rel=1e-4)
    assert step0["student_accuracy"] == step0["teacher_accuracy"]
    assert step0["student_effective_number"] == pytest.approx(step0["teacher_effective_number"], rel=1e-3)
    assert step0["alignment"] > 0.99


def test_cli_bad_run_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "circuitdiff.cli.main", "trajectory", "--teacher", "tiny-gpt2",
                           str(tmp_path), "-t", "ioi"], capture_output=True, text=True)
    assert proc.returncode == 2 and "holds no checkpoints" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_teacher_and_the_null_run_once_per_task_for_all_checkpoints(
        run: Path, trajectory: tuple[Path, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps 2 and 4 reuse step 0's teacher run and random students; ``test_last_row_equals_a_plain_compare``
    checks the reused numbers against a comparison that reuses nothing."""
    _, table = trajectory
    names: list[str] = []
    draws: list[int] = []
    real_run, real_null = compare_module.run_model_on_task, compare_module.null_draws

    def spy_run(lm: object, *args: object, **kwargs: object) -> object:
        names.append(lm.name)  # type: ignore[attr-defined]
        return real_run(lm, *args, **kwargs)

    def spy_null(*args: object, **kwargs: object) -> object:
        draws.append(int(kwargs["n_null"]))  # type: ignore[call-overload]
        return real_null(*args, **kwargs)

    monkeypatch.setattr(compare_module, "run_model_on_task", spy_run)
    monkeypatch.setattr(compare_module, "null_draws", spy_null)
    again = run_trajectory("tiny-gpt2", [run], ["ioi"], tmp_path / "traj", OPTIONS, progress=False)
    assert names.count("tiny-gpt2") == 1 and len(names) == 4  # the teacher once, each of 3 students once
    assert draws == [OPTIONS.n_null]  # the random students once
    assert again.drop(columns="checkpoint").equals(table.drop(columns="checkpoint"))
    # a SharedRuns given by the caller carries them across trajectories
    from circuitdiff.shared_runs import SharedRuns

    names.clear(), draws.clear()
    shared = SharedRuns(load_model("tiny-gpt2"))
    first = run_trajectory("ignored", [snapshot_folder(run, s) for s in (0, 2)], ["ioi"], tmp_path / "a", OPTIONS,
                           progress=False, shared=shared)
    second = run_trajectory("ignored", [snapshot_folder(run, 4)], ["ioi"], tmp_path / "b", OPTIONS, progress=False,
                            shared=shared)
    assert len(names) == 4 and len(draws) == 1 and shared.reused == {"teacher": 2, "null": 2}
    assert list(first["alignment"]) + list(second["alignment"]) == list(table["alignment"])


def test_nothing_is_reused_for_other_prompts_options_or_architectures() -> None:
    from dataclasses import replace

    from circuitdiff.shared_runs import SharedRuns, same_encoding
    from circuitdiff.tasks import encode_task, get_task

    teacher, student = load_model("tiny-gpt2"), load_model("tiny-distilgpt2")
    enc12, enc10 = (encode_task(get_task("ioi", n, 0), teacher.tokenizer) for n in (12, 10))
    assert same_encoding(enc12, encode_task(get_task("ioi", 12, 0), teacher.tokenizer))
    assert not same_encoding(enc12, enc10)
    shared = SharedRuns(teacher)
    shared.keep_teacher_run(teacher, "ioi", enc12, OPTIONS, "the run")  # type: ignore[arg-type]
    assert shared.teacher_run(teacher, "ioi", enc12, OPTIONS) == "the run"
    assert shared.teacher_run(teacher, "ioi", enc10, OPTIONS) is None
    assert shared.teacher_run(teacher, "ioi", enc12, replace(OPTIONS, circuit_thresholds=(0.1,))) is None
    assert shared.teacher_run(teacher, "ioi", enc12, replace(OPTIONS, n_null=5)) == "the run"  # null never reaches it
    assert shared.teacher_run(load_model("tiny-gpt2"), "ioi", enc12, OPTIONS) is None  # another model object
    shared.keep_null(student, "ioi", enc12, OPTIONS, ["draws"])  # type: ignore[list-item]
    assert shared.null(load_model("tiny-distilgpt2"), "ioi", enc12, OPTIONS) == ["draws"]  # same architecture
    assert shared.null(teacher, "ioi", enc12, OPTIONS) is None  # 6 layers, not 3
    assert shared.null(student, "ioi", enc12, replace(OPTIONS, n_null=5)) is None
    assert shared.null(student, "ioi", enc10, OPTIONS) is None
    assert shared.reused == {"teacher": 2, "null": 1}


def test_the_ray_backend_gives_the_local_table(run: Path, trajectory: tuple[Path, object], tmp_path: Path) -> None:
    pytest.importorskip("ray")
    _, table = trajectory
    outcomes: list[dict] = []
    on_ray = run_trajectory("tiny-gpt2", [run], ["ioi"], tmp_path / "traj", OPTIONS, progress=False, backend="ray",
                            num_cpus=2, on_checkpoint=lambda _c, outcome: outcomes.append(outcome))
    assert len(outcomes) == 3 and all(o["ok"] for o in outcomes)
    assert on_ray.drop(columns="checkpoint").equals(table.drop(columns="checkpoint"))


def test_the_ray_backend_needs_a_teacher_it_can_load_itself(run: Path, tmp_path: Path) -> None:
    with pytest.raises(TrajectoryError, match="give it as a name or folder"):
        run_trajectory(load_model("tiny-gpt2"), [run], ["ioi"], tmp_path, OPTIONS, backend="ray")


def test_cli_unknown_backend_is_one_line_exit_2(run: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "circuitdiff.cli.main", "trajectory", "--teacher", "tiny-gpt2",
                           str(run), "-t", "ioi", "--out", str(tmp_path), "--backend", "slurm"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown backend 'slurm'" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
