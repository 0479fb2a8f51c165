"""``circuitdiff features`` on the shipped tiny GPT-2 against known answers.

- the model against itself: each decoder rebuilds the same activations, so (almost) nothing is exclusive;
- splicing the reconstruction plus its error reproduces the model's metric exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from circuitdiff.features import FeatureOptions, features
from circuitdiff.models.loading import LoadedModel, load_model

SMALL = dict(n_latents=128, k=8, n_tokens=300 * 256, batch_size=256, context=32, analysis_tokens=6000,
             n_prompts=8, top=8, seed=0)


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
    assert (tmp_path / "features.html").is_file() and (tmp_path / "crosscoder.safetensors").is_file()
