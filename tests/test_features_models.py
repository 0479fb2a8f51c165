"""``circuitdiff features`` on the shipped tiny GPT-2 against known answers.

- the model against itself: each decoder rebuilds the same activations, so (almost) nothing is exclusive;
- splicing the reconstruction plus its error reproduces the model's metric exactly;
- a planted ground truth: the teacher gets a sparse, context-dependent feature along a known direction u (one
  block-0 MLP neuron made sparse and written along u), the student is that teacher with u removed from the
  residual stream by a weight edit of every writer up to the site; the teacher-only latents align with u
  (cosine >= 0.9) and nothing else is exclusive;
- a randomly initialised student: the teacher's most task-relevant latents are mostly teacher-only, far above
  the base rate. Not all of them: a random student's embeddings are a perfect (random) token code, so a
  latent that only says "this token is ' to'" is rightly shared (see docs/features.md).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from circuitdiff.features import FeatureOptions, features
from circuitdiff.features.activations import text_rows
from circuitdiff.lab.corpus import load_corpus
from circuitdiff.models.loading import LoadedModel, from_hugging_face, load_model
from circuitdiff.report import write_report

SMALL = dict(n_latents=128, k=8, n_tokens=300 * 256, batch_size=256, context=32, analysis_tokens=6000,
             corpus_tokens=20_000, n_prompts=8, top=8, seed=0)


@pytest.fixture(scope="module")
def teacher(one_torch_thread) -> LoadedModel:  # noqa: ANN001
    return load_model("tiny-gpt2")


def _live(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table["task"] == table["task"].iloc[0]) & (table["class"] != "dead")]


def test_model_against_itself_has_almost_no_exclusive_latents(teacher: LoadedModel, tmp_path) -> None:  # noqa: ANN001
    result = features(teacher, teacher, ["ioi"], tmp_path, FeatureOptions(**SMALL, teacher_layer=3))
    live = _live(result.table)
    exclusive = live["class"].isin(["teacher_only", "student_only"]).mean()
    assert exclusive <= 0.05, exclusive
    assert result.summary["settings"]["site"] == {"teacher": 3, "student": 3}  # layer-CKA picks the same block
    # files: one row per latent and task with the columns; the summary's keys
    table = pd.read_parquet(tmp_path / "features.parquet")
    assert {"task", "latent", "relative_norm", "class", "effect_teacher", "effect_student"} <= set(table.columns)
    assert len(table) == SMALL["n_latents"]
    summary = json.loads((tmp_path / "features.json").read_text())
    assert {"n_latents", "counts", "fve", "l0", "dead", "tasks"} <= set(summary)
    assert sum(summary["counts"].values()) == SMALL["n_latents"]
    assert summary["fve"]["teacher"] > 0.5
    # splicing reconstruction + error is the model itself
    ioi = summary["tasks"]["ioi"]
    assert max(ioi["identity_gap"].values()) < 1e-4
    # same model on both sides: both decoders explain the same activations, so the effects agree
    exact = live.dropna(subset=["ablation_teacher"])
    assert len(exact) >= SMALL["top"]
    np.testing.assert_allclose(exact["ablation_teacher"], exact["ablation_student"], atol=0.15 * exact["ablation_teacher"].abs().max())
    assert (tmp_path / "crosscoder.safetensors").is_file()
    page = (tmp_path / "features.html").read_text()
    assert 'id="features"' in page and "<svg" in page and "<mark>" in page
    # a comparison's report in the same folder (compare --features) gains the section
    from test_report import make_results_folder

    write_report(make_results_folder(tmp_path, shape=(4, 2, 4), tasks=("ioi",), n_prompts=12), tmp_path)
    report = (tmp_path / "report.html").read_text()
    assert report.count('id="features"') == 1 and "features_relative_norm" in report


def _project_writers(model: torch.nn.Module, u: torch.Tensor, up_to: int) -> None:
    """Remove direction ``u`` from everything GPT-2 writes into the residual stream in blocks 0..up_to."""
    p = torch.eye(len(u)) - torch.outer(u, u)
    with torch.no_grad():
        tr = model.transformer
        for emb in (tr.wte, tr.wpe):
            emb.weight.copy_(emb.weight @ p)
        for block in tr.h[:up_to + 1]:
            for proj in (block.attn.c_proj, block.mlp.c_proj):  # Conv1D: weight (in, out)
                proj.weight.copy_(proj.weight @ p)
                proj.bias.copy_(proj.bias @ p)


def _planted_teacher(teacher: LoadedModel, u: torch.Tensor) -> torch.nn.Module:
    """tiny-gpt2 whose block-0 MLP neuron with the most varied top-3% tokens fires on those 3% only (gain 4,
    bias at its 97th percentile) and writes along ``u`` with about the residual stream's typical norm."""
    rows = text_rows(load_corpus("sample")[:200], teacher.tokenizer, 32)
    seen: list[torch.Tensor] = []
    mlp = teacher.model.transformer.h[0].mlp
    handle = mlp.c_fc.register_forward_hook(lambda _m, _a, out: seen.append(out))
    with torch.no_grad():
        hidden = teacher.model.transformer(rows.input_ids, attention_mask=rows.attention_mask,
                                           output_hidden_states=True).hidden_states[1]
    handle.remove()
    mask = rows.token_mask()
    pre, ids = seen[0][mask], rows.input_ids[mask]
    q = torch.quantile(pre, 0.97, dim=0)
    n = int(np.argmax([len(set(ids[pre[:, i] > q[i]].tolist())) for i in range(pre.shape[1])]))
    gain = 4.0
    fired = torch.nn.functional.gelu(gain * (pre[:, n] - q[n]))
    planted = copy.deepcopy(teacher.model)
    mlp = planted.transformer.h[0].mlp
    with torch.no_grad():
        mlp.c_fc.weight[:, n] *= gain
        mlp.c_fc.bias[n] = gain * (mlp.c_fc.bias[n] - q[n])
        mlp.c_proj.weight[n] = float(hidden[mask].norm(dim=-1).mean()) / fired[fired > 0].mean() * u
    return planted


def test_planted_removed_direction_is_the_teacher_only_feature(teacher: LoadedModel) -> None:
    u = torch.randn(teacher.adapter.d_model, generator=torch.Generator().manual_seed(1))
    u /= u.norm()
    planted = _planted_teacher(teacher, u)
    removed = copy.deepcopy(planted)
    _project_writers(removed, u, up_to=0)
    t_lm = from_hugging_face(planted, teacher.tokenizer, "planted")
    s_lm = from_hugging_face(removed, teacher.tokenizer, "removed")
    options = FeatureOptions(**dict(SMALL, n_latents=256, n_tokens=600 * 256, corpus_tokens=40_000), teacher_layer=0,
                             student_layer=0)
    result = features(t_lm, s_lm, ["ioi"], None, options)
    live = _live(result.table)
    t_only = live[live["class"] == "teacher_only"]
    assert len(t_only) >= 1
    assert set(live["class"]) <= {"shared", "teacher_only"}  # nothing student-only
    dec = result.decoder_teacher[t_only["latent"].to_numpy()]  # normalised units: a shift and a scale, same directions
    cos = np.abs(dec @ u.numpy()) / np.linalg.norm(dec, axis=1)
    assert (cos >= 0.9).all(), cos
    # and the latent best aligned with u is among them
    every = result.decoder_teacher[live["latent"].to_numpy()]
    best = live["latent"].to_numpy()[np.argmax(np.abs(every @ u.numpy()) / np.linalg.norm(every, axis=1))]
    assert best in set(t_only["latent"])


def test_random_student_leaves_the_teachers_task_features_teacher_only(teacher: LoadedModel) -> None:
    torch.manual_seed(0)
    random_model = type(teacher.model)(copy.deepcopy(teacher.model.config)).eval()
    student = from_hugging_face(random_model, teacher.tokenizer, "random")
    options = FeatureOptions(**dict(SMALL, n_latents=256, n_tokens=600 * 256, corpus_tokens=None), teacher_layer=3,
                             student_layer=3)
    live = _live(features(teacher, student, ["ioi"], None, options).table)
    top = live.reindex(live["effect_teacher"].abs().sort_values(ascending=False).index).head(SMALL["top"])
    share = (top["class"] == "teacher_only").mean()
    base = (live["class"] == "teacher_only").mean()
    assert share >= 0.5 and share >= 5 * base, (share, base)
    assert not (top["class"] == "student_only").any()


@pytest.mark.parametrize("args, message", [
    (["--site", "teacher=3"], "--site must look like teacher:4,student:2"),
    (["--site", "teacher:9"], "teacher layer 9 is out of range"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args: list[str], message: str, capsys) -> None:  # noqa: ANN001
    from circuitdiff.cli.main import _mount_features, run_app

    _mount_features()
    assert run_app(["features", *args, "-t", "ioi"]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err
