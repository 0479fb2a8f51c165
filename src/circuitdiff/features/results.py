"""Plain results of ``circuitdiff features``: one row per latent and task, a summary, top contexts; files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from circuitdiff.features.analysis import CLASSES, EXCLUSIVE_NORM, NU_MAX, LatentTable
from circuitdiff.features.relevance import TaskRelevance
from circuitdiff.results import atomic_write

HEADLINE_TOP = 20
MIN_FVE = 0.5
"""Below this fraction of variance explained in either model the dictionary is not a description of the
activations, so its classes and effects are flagged as no finding (a diverged run read FVE -0.33 on SmolLM2)."""


def reconstruction_problem(fve: dict[str, float]) -> str | None:
    """Why the classes cannot be read as findings (the dictionary rebuilds too little), or None."""
    low = {m: v for m, v in fve.items() if not v >= MIN_FVE}  # NaN counts as low
    if not low:
        return None
    told = ", ".join(f"{m} {v:.2f}" for m, v in low.items())
    return (f"the dictionary explains too little of the activations (FVE {told}; below {MIN_FVE}): its classes and "
            "effects are not findings; train with a lower --lr or more --n-tokens")


@dataclass
class FeatureResults:
    """What ``features`` found: the per-latent table, per-task relevance, summary numbers and settings."""

    table: pd.DataFrame
    summary: dict[str, Any]
    contexts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    decoder_teacher: np.ndarray | None = None
    """(n_latents, d_teacher) in the normalised units the crosscoder reads (also in crosscoder.safetensors)."""
    decoder_student: np.ndarray | None = None

    def write(self, out: Path) -> None:
        out = Path(out)
        atomic_write(out / "features.parquet", lambda p: self.table.to_parquet(p, index=False))
        payload = dict(self.summary, contexts={str(k): v for k, v in self.contexts.items()})
        atomic_write(out / "features.json", lambda p: p.write_text(json.dumps(payload, indent=2, default=_plain)))


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")


def latent_frame(latents: LatentTable) -> pd.DataFrame:
    return pd.DataFrame({
        "latent": np.arange(len(latents.cls)),
        "relative_norm": latents.relative_norm,
        "class": latents.cls.astype(str),
        "frequency": latents.frequency,
        "nu_error": latents.nu_error,
        "nu_reconstruction": latents.nu_recon,
        "decoder_cosine": latents.decoder_cosine,
        "norm_teacher": latents.norm_teacher,
        "norm_student": latents.norm_student,
        "max_activation": latents.top_values[:, 0],
    })


def feature_table(latents: LatentTable, relevance: list[TaskRelevance]) -> pd.DataFrame:
    """One row per latent and task: ``effect_*`` is the exact ablation where it was run, else the attribution."""
    base = latent_frame(latents)
    frames = []
    for rel in relevance:
        frame = base.copy()
        frame.insert(0, "task", rel.task)
        for role in ("teacher", "student"):
            exact, attr = rel.ablation[role], rel.attribution[role]
            frame[f"effect_{role}"] = np.where(np.isnan(exact), attr, exact)
            frame[f"attribution_{role}"] = attr
            frame[f"ablation_{role}"] = exact
        frame["effect_method"] = np.where(np.isnan(rel.ablation["teacher"]), "attribution", "exact")
        frames.append(frame)
    if not frames:
        return base.assign(task="", effect_teacher=np.nan, effect_student=np.nan)
    return pd.concat(frames, ignore_index=True)


def headline(table: pd.DataFrame, task: str, top: int = HEADLINE_TOP) -> dict[str, Any]:
    """Of each model's ``top`` most task-relevant live latents (|effect|), how many fall in each class."""
    rows = table[(table["task"] == task) & (table["class"] != "dead")]
    out: dict[str, Any] = {}
    for role in ("teacher", "student"):
        best = rows.reindex(rows[f"effect_{role}"].abs().sort_values(ascending=False).index).head(top)
        out[role] = {"top": len(best), "counts": {c: int((best["class"] == c).sum()) for c in CLASSES[:3]},
                     "latents": best["latent"].astype(int).tolist()}
    t, s = out["teacher"]["counts"], out["student"]["counts"]
    out["text"] = (f"{task}: of the teacher's {out['teacher']['top']} most task-relevant features, {t['shared']} are "
                   f"shared and {t['teacher_only']} teacher-only (dropped); the student's own task features "
                   f"(student-only among its top {out['student']['top']}): {s['student_only']}")
    return out


def summary(latents: LatentTable, relevance: list[TaskRelevance], table: pd.DataFrame,
            settings: dict[str, Any]) -> dict[str, Any]:
    counts = {c: int((latents.cls == c).sum()) for c in CLASSES}
    return {
        "n_latents": int(len(latents.cls)),
        "counts": counts,
        "fve": latents.fve,
        "reconstruction_problem": reconstruction_problem(latents.fve),
        "l0": latents.l0,
        "dead": counts["dead"] / max(1, len(latents.cls)),
        "analysis_tokens": latents.tokens,
        "thresholds": {"exclusive_relative_norm": EXCLUSIVE_NORM, "latent_scaling_nu_max": NU_MAX},
        "relative_norm_histogram": np.histogram(latents.relative_norm[latents.cls != "dead"], bins=20,
                                                range=(0.0, 1.0))[0].tolist(),
        "tasks": {r.task: {"clean": r.clean, "spliced": r.spliced, "identity_gap": r.identity_gap,
                           "headline": headline(table, r.task)} for r in relevance},
        "settings": settings,
    }


@dataclass(frozen=True)
class Context:
    """A token window around one activation, the activating token marked."""

    source: str
    value: float
    before: str
    token: str
    after: str


def contexts_for(latent_ids: list[int], latents: LatentTable, token_rows: np.ndarray, sources: tuple[str, ...],
                 tokenizer: Any, width: tuple[int, int] = (12, 3)) -> dict[int, list[dict[str, Any]]]:
    """Top-activating contexts of the given latents from the analysis rows (corpus and prompts), in the tokens
    of ``token_rows`` (the teacher's: a pair's place is its teacher row and position)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for j in latent_ids:
        items = []
        for value, (row, pos) in zip(latents.top_values[j], latents.top_where[j], strict=True):
            if row < 0 or value <= 0:
                continue
            ids = token_rows[row]
            text = lambda sl: tokenizer.decode([int(t) for t in ids[sl] if t >= 0])  # noqa: E731
            items.append(asdict(Context(sources[row], float(value), text(slice(max(0, pos - width[0]), pos)),
                                        text(slice(pos, pos + 1)), text(slice(pos + 1, pos + 1 + width[1])))))
        out[int(j)] = items
    return out
