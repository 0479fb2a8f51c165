"""CircuitDiffCallback in a real ``transformers.Trainer`` run on the shipped causal pair.

Ground truths: the training losses of the same seeded run without the callback (it must not
disturb training); a plain ``compare`` of the Trainer's saved final checkpoint (the last
row); TensorBoard's own event files read back with its ``EventAccumulator``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as T

from circuitdiff.compare import compare
from circuitdiff.integrations import CircuitDiffCallback
from circuitdiff.models.loading import resolve
from circuitdiff.options import CompareOptions, OptionsError
from circuitdiff.trajectory import find_checkpoints, run_trajectory
from circuitdiff.trajectory.checkpoints import TrajectoryError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TEXTS = ["When Mary and John went to the store, John gave a drink to Mary.",
         "One two three four five six seven eight nine ten.",
         "The cat sat on the mat and the dog sat on the log.",
         "January February March April May June July August."]
OPTIONS = dict(n_prompts=8, n_boot=20, n_null=1, circuit_thresholds=(0.2,))
STEPS, EVERY = 5, 2


class Texts(torch.utils.data.Dataset):
    """A few tokenised sentences, labels = inputs (the model shifts them)."""

    def __init__(self, tokenizer: T.PreTrainedTokenizerBase) -> None:
        self.items = [tokenizer(t) for t in TEXTS]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.items[i]["input_ids"], "labels": self.items[i]["input_ids"]}


def train(out: Path, callback: CircuitDiffCallback | None, report_to: str = "none",
          save_steps: int = EVERY) -> tuple[T.Trainer, list[float]]:
    """``STEPS`` seeded steps of the shipped tiny-distilgpt2 (with dropout) on ``TEXTS``; the per-step losses."""
    folder = resolve("tiny-distilgpt2")[0]
    tokenizer = T.AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.eos_token
    T.set_seed(0)
    # dropout on: each step's loss then depends on torch's random state, which the callback must leave as it was
    model = T.AutoModelForCausalLM.from_pretrained(folder, resid_pdrop=0.1, attn_pdrop=0.1, embd_pdrop=0.1)
    args = T.TrainingArguments(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=2,
                               learning_rate=1e-3, logging_steps=1, save_steps=save_steps, report_to=report_to,
                               use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True)
    collator = T.DataCollatorForSeq2Seq(tokenizer, padding=True)
    trainer = T.Trainer(model=model, args=args, train_dataset=Texts(tokenizer), data_collator=collator,
                        processing_class=tokenizer, callbacks=[callback] if callback else None)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return trainer, losses


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CircuitDiffCallback, list[float]]:
    out = tmp_path_factory.mktemp("trainer")
    callback = CircuitDiffCallback("tiny-gpt2", ["ioi"], every_n_steps=EVERY, **OPTIONS)
    _, losses = train(out, callback, report_to="tensorboard")
    return out, callback, losses


def test_training_losses_equal_without_the_callback(run, tmp_path: Path) -> None:
    _, _, with_callback = run
    _, without = train(tmp_path, None)
    assert len(with_callback) == STEPS
    assert with_callback == without  # bitwise: the same floats


def test_rows_at_step_zero_every_n_and_the_end(run) -> None:
    out, callback, _ = run
    table = callback.table()
    assert list(table["step"]) == [0, 2, 4, 5] and set(table["task"]) == {"ioi"}
    import pandas as pd

    written = pd.read_parquet(out / "circuitdiff" / "trajectory.parquet")
    assert written.equals(table)
    assert (out / "circuitdiff" / "trajectory.html").is_file()
    assert (out / "circuitdiff" / "steps" / "step-000004" / "results.json").is_file()
    assert len(table["alignment"].unique()) > 1  # the student really changed between comparisons
    assert callback.shared.reused == {"teacher": 3, "null": 3}  # teacher and random students run at step 0 only


def test_last_row_equals_a_plain_compare_of_the_saved_checkpoint(run) -> None:
    out, callback, _ = run
    plain = compare("tiny-gpt2", str(out / f"checkpoint-{STEPS}"), ["ioi"], progress=False, **OPTIONS)["tasks"]["ioi"]
    last = callback.table().iloc[-1]
    assert last["step"] == STEPS
    assert last["alignment"] == plain["alignment"]["score"]
    assert [last["alignment_lo"], last["alignment_hi"]] == plain["alignment"]["ci"]
    assert last["student_accuracy"] == plain["student"]["accuracy"]
    assert last["student_clean_metric"] == plain["student"]["clean_metric"]
    assert last["student_effective_number"] == plain["concentration"]["student"]["effective_number"]["point"]


def test_tensorboard_event_files_hold_the_scalars(run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, callback, _ = run
    events = list(out.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    scalars: dict[str, dict[int, float]] = {}
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    table = callback.table()
    for name in ("alignment", "alignment_lo", "student_accuracy", "teacher_effective_number"):
        logged = scalars[f"train/circuitdiff/ioi/{name}"]
        assert sorted(logged) == [0, 2, 4, 5]
        for step, value in logged.items():
            assert value == pytest.approx(float(table.loc[table["step"] == step, name].iloc[0]), rel=1e-6)
    assert "train/loss" in scalars  # the Trainer's own scalars are still there


def test_unknown_option_and_missing_tokenizer_are_named_errors(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="unknown option n_prompt"):
        CircuitDiffCallback("tiny-gpt2", ["ioi"], n_prompt=8)
    with pytest.raises(OptionsError, match="every_n_steps"):
        CircuitDiffCallback("tiny-gpt2", ["ioi"], every_n_steps=0)
    model = T.AutoModelForCausalLM.from_pretrained(resolve("tiny-distilgpt2")[0])
    args = T.TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to="none", use_cpu=True)
    trainer = T.Trainer(model=model, args=args, train_dataset=[{"input_ids": [1, 2], "labels": [1, 2]}],
                        callbacks=[CircuitDiffCallback("tiny-gpt2", ["ioi"])])  # no processing_class
    with pytest.raises(OptionsError, match="needs the student's tokenizer"):
        trainer.train()


def test_trajectory_reads_the_trainers_output_dir(run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Its checkpoint-N folders, by step; each row what the callback said of the live model at that step."""
    out, callback, _ = run
    assert [(c.step, c.folder.name) for c in find_checkpoints([out])] == [
        (2, "checkpoint-2"), (4, "checkpoint-4"), (5, "checkpoint-5")]
    table = run_trajectory("tiny-gpt2", [out], ["ioi"], tmp_path, CompareOptions(**OPTIONS), progress=False)
    live = callback.table().set_index("step")
    assert list(table["step"]) == [2, 4, 5]
    for _, row in table.iterrows():
        assert row["alignment"] == live.loc[row["step"], "alignment"]
        assert row["student_accuracy"] == live.loc[row["step"], "student_accuracy"]
    from circuitdiff.cli.main import _mount_trajectory, run_app

    _mount_trajectory()
    code = run_app(["trajectory", str(out), "--teacher", "tiny-gpt2", "-t", "ioi", "--out", str(tmp_path),
                    "--n-prompts", "8", "--n-boot", "20", "--n-null", "1", "--circuit-thresholds", "0.2",
                    "--no-progress"])
    said = capsys.readouterr()
    assert code == 0 and said.err.count("finished earlier, reused") == 3  # the comparisons just made, reused
    assert (tmp_path / "trajectory.html").is_file()


def test_trainer_state_gives_the_step_and_must_agree_with_the_name(tmp_path: Path) -> None:
    import json
    import shutil

    source = resolve("tiny-distilgpt2")[0]
    for name, step in (("early", 3), ("late", 9)):  # names without steps: trainer_state.json orders them
        shutil.copytree(source, tmp_path / name)
        (tmp_path / name / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    found = find_checkpoints([tmp_path / "late", tmp_path / "early"])
    assert [(c.step, c.folder.name) for c in found] == [(3, "early"), (9, "late")]
    shutil.copytree(source, tmp_path / "checkpoint-4")
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
    with pytest.raises(TrajectoryError, match="named step 4 but its trainer_state.json says global_step 5"):
        find_checkpoints([tmp_path / "checkpoint-4", tmp_path / "late"])


def test_trl_gkd_trainer_runs_the_callback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TRL's GKDTrainer (a Trainer subclass): the teacher distils into the student, the callback compares both."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    try:
        from trl import GKDConfig, GKDTrainer
    except ImportError:  # trl >= 1.x keeps it under experimental
        from trl.experimental.gkd import GKDConfig, GKDTrainer
    tokenizer = T.AutoTokenizer.from_pretrained(resolve("tiny-distilgpt2")[0])
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    chat = [{"role": "user", "content": TEXTS[0][:30]}, {"role": "assistant", "content": TEXTS[0][30:]}]
    data = datasets.Dataset.from_list([{"messages": chat}] * 4)
    args = GKDConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, lmbda=0.0,
                     learning_rate=1e-3, report_to="none", use_cpu=True, save_strategy="no", max_length=32,
                     disable_tqdm=True)
    callback = CircuitDiffCallback("tiny-gpt2", ["ioi"], every_n_steps=2, **OPTIONS)
    trainer = GKDTrainer(model=T.AutoModelForCausalLM.from_pretrained(resolve("tiny-distilgpt2")[0]),
                         teacher_model=T.AutoModelForCausalLM.from_pretrained(resolve("tiny-gpt2")[0]), args=args,
                         train_dataset=data, processing_class=tokenizer, callbacks=[callback])
    trainer.train()
    assert list(callback.table()["step"]) == [0, 2]
    logged = [e for e in trainer.state.log_history if "circuitdiff/ioi/alignment" in e]
    assert [e["step"] for e in logged] == [0, 2]
    assert len({e["circuitdiff/ioi/alignment"] for e in logged}) > 1  # GKD moved the student
