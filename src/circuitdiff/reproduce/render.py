"""The reproduction table as people read it: one line per job, circuitdiff beside the study (Markdown, HTML).

The long table (``table.reproduce_frame``) is the data; this pivots it to one line per
pair, task and ablation. A missing value prints as 'withheld', 'failed' or 'not run' with a
numbered footnote giving the reason, so no cell ever looks like a number it is not.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from circuitdiff.reproduce.published import CIRCUIT_THRESHOLD, STUDY_PAIRS

HEADERS = ("pair", "task", "ablation", "n", "paper A", "paper A, published", "alignment [95% CI]", "null q95",
           "above chance", "worst head drop % (T / S)", "published", "mean head drop % (T / S)", "published",
           f"circuit at T={CIRCUIT_THRESHOLD:g}: heads+MLPs (T / S)", "published")
INTRO = ("circuitdiff's figures beside the study's (Haskins & Adams, arXiv 2505.10822). 'paper A' is the study's "
         "alignment score recomputed by circuitdiff; 'alignment' is circuitdiff's calibrated score (influence-"
         "weighted optimal transport) with its 95% bootstrap interval, the 95% quantile of random students "
         "(null q95) and the verdict (interval above it). Drops are per attention head, in % of the clean logit "
         "difference; T = teacher, S = student; n = prompts scored. Published values are the study's pair in the same role "
         "({roles}); the drop and circuit figures are the study's numerals results, and the study does not say "
         "which ablation they used, so they stand beside both.")


class Footnotes:
    """Reasons numbered in order of first use, each printed once."""

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}

    def mark(self, status: str, reason: str) -> str:
        number = self.reasons.setdefault(reason, len(self.reasons) + 1)
        return f"{status} [{number}]"


def _num(value: Any, digits: int) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _one(rows: pd.DataFrame, notes: Footnotes, fmt: Callable[[pd.Series], str]) -> str:
    """A single figure's cell: its value, or its status with a footnote."""
    if rows.empty:
        return "—"
    row = rows.iloc[0]
    return fmt(row) if row["status"] == "computed" else notes.mark(str(row["status"]), str(row["reason"]))


def _pick(job: pd.DataFrame, figure: str, model: str, threshold: float | None = None) -> pd.DataFrame:
    rows = job[(job["figure"] == figure) & (job["model"] == model)]
    return rows[rows["threshold"].sub(threshold).abs() < 1e-9] if threshold is not None else rows


def _published(rows: pd.DataFrame) -> str:
    texts = [str(t) for t in rows["published"] if not pd.isna(t)]
    return " / ".join(texts) if texts else "—"


def _pair_of(job: pd.DataFrame, figure: str, notes: Footnotes, digits: int = 1) -> tuple[str, str]:
    cells = [_one(_pick(job, figure, role), notes, lambda r: _num(r["circuitdiff"], digits) or "—")
             for role in ("teacher", "student")]
    return " / ".join(cells), _published(pd.concat([_pick(job, figure, role) for role in ("teacher", "student")]))


def _circuit(job: pd.DataFrame, notes: Footnotes) -> tuple[str, str]:
    cells, pubs = [], []
    for role in ("teacher", "student"):
        heads = _pick(job, "circuit_heads", role, CIRCUIT_THRESHOLD)
        mlps = _pick(job, "circuit_mlps", role, CIRCUIT_THRESHOLD)
        cells.append(_one(heads, notes, lambda r, m=mlps: f"{int(r['circuitdiff'])}+{int(m.iloc[0]['circuitdiff'])}"))
        if not heads.empty and not pd.isna(heads.iloc[0]["published"]):
            pubs.append(f"{heads.iloc[0]['published']}+{mlps.iloc[0]['published']}")
    return " / ".join(cells), " / ".join(pubs) or "—"


def _alignment(job: pd.DataFrame, notes: Footnotes) -> tuple[str, str, str]:
    rows = _pick(job, "alignment", "pair")
    score = _one(rows, notes, lambda r: f"{_num(r['circuitdiff'], 2)} [{_num(r['lo'], 2) or '—'}, {_num(r['hi'], 2) or '—'}]")
    if rows.empty or rows.iloc[0]["status"] != "computed":
        return score, "—", "—"
    row = rows.iloc[0]
    verdict = "—" if pd.isna(row["above_chance"]) else ("yes" if bool(row["above_chance"]) else "no")
    return score, _num(row["null_q95"], 2) or "—", verdict


def summary_rows(frame: pd.DataFrame) -> tuple[list[list[str]], list[str]]:
    """One list of cells per job (in table order) and the numbered footnotes."""
    notes, lines = Footnotes(), []
    for _, job in frame.groupby("job", sort=False):
        first = job.iloc[0]
        paper = _pick(job, "paper_alignment", "pair")
        worst, worst_pub = _pair_of(job, "worst_head_drop_pct", notes)
        mean, mean_pub = _pair_of(job, "mean_head_drop_pct", notes)
        circuit, circuit_pub = _circuit(job, notes)
        n = "—" if pd.isna(first["n_prompts"]) else str(first["n_prompts"])
        lines.append([str(first["pair"]), str(first["task"]), str(first["ablation"]), n,
                      _one(paper, notes, lambda r: _num(r["circuitdiff"], 2) or "—"), _published(paper),
                      *_alignment(job, notes), worst, worst_pub, mean, mean_pub, circuit, circuit_pub])
    return lines, [f"[{n}] {reason}" for reason, n in notes.reasons.items()]


def intro() -> str:
    return INTRO.format(roles="; ".join(f"{k}: {v}" for k, v in STUDY_PAIRS.items()))


def markdown(frame: pd.DataFrame, title: str) -> str:
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines, footnotes = summary_rows(frame)
    out = [f"# {esc(title)}", "", intro(), "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(esc(c) for c in cells) + " |" for cells in lines]
    return "\n".join(out + [""] + [esc(f) + "  " for f in footnotes]) + "\n"


def html_page(frame: pd.DataFrame, title: str, out: Path) -> str:
    """A page in ``out``: the table, its footnotes, and a link to each job's full report where it has one."""
    e = html.escape
    lines, footnotes = summary_rows(frame)
    jobs = list(dict.fromkeys(frame["job"]))
    link = lambda job: (f"<a href='{e(job)}/report.html'>report</a>"  # noqa: E731
                        if (out / job / "report.html").is_file() else "—")
    head = "".join(f"<th>{e(h)}</th>" for h in (*HEADERS, "report"))
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + f"<td>{link(job)}</td></tr>"
                   for cells, job in zip(lines, jobs))
    notes = "".join(f"<li>{e(f)}</li>" for f in footnotes)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px}</style></head><body>"
            f"<h1>{e(title)}</h1><p>{e(intro())}</p><table><tr>{head}</tr>{body}</table>"
            f"<ul style='list-style:none'>{notes}</ul><p>Every figure, with intervals and reasons: "
            "reproduce.csv / reproduce.parquet.</p></body></html>\n")
