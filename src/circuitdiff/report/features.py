"""The feature section: relative-norm histogram and the most task-relevant latents with their contexts.

Written as ``features.html`` by ``circuitdiff features`` and inlined into ``report.html`` when a comparison
folder holds ``features.json`` (``compare --features``). Contexts show the activating token highlighted, as
feature dashboards do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment
from markupsafe import Markup

from circuitdiff.report.svg import new_figure, render_figure
from circuitdiff.results import atomic_write

SHOWN = 5
_SECTION = """
<section id="features"><h2>Features: what the student kept, dropped and invented</h2>
<p>BatchTopK crosscoder with {{ s.n_latents }} latents at teacher block {{ s.settings.site.teacher }} and student block
{{ s.settings.site.student }}; FVE teacher {{ '%.3f'|format(s.fve.teacher) }}, student {{ '%.3f'|format(s.fve.student) }};
L0 {{ '%.1f'|format(s.l0) }}; dead {{ '%.1f'|format(100 * s.dead) }}%.
Classes: {% for c, n in s.counts.items() %}{{ c }} {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}
(exclusive: relative decoder norm &le; {{ '%.3f'|format(s.thresholds.exclusive_relative_norm) }} or &ge; {{ '%.3f'|format(1 - s.thresholds.exclusive_relative_norm) }},
confirmed by Latent Scaling &nu; &lt; {{ s.thresholds.latent_scaling_nu_max }}).</p>
{% if s.reconstruction_problem %}<p class="warning"><strong>No finding:</strong> {{ s.reconstruction_problem }}.</p>{% endif %}
{{ histogram }}
{% for task, t in s.tasks.items() %}
<h3>{{ task }}</h3>
<p>{{ t.headline.text }}. Metric (mean logit difference, or log-prob difference for answers of several tokens) clean / with the reconstruction spliced in:
teacher {{ '%.3f'|format(t.clean.teacher) }} / {{ '%.3f'|format(t.spliced.teacher) }},
student {{ '%.3f'|format(t.clean.student) }} / {{ '%.3f'|format(t.spliced.student) }}.</p>
{% for cls, rows in tops[task].items() %}
<h4>Most task-relevant {{ cls|replace('_', '-') }} latents</h4>
{% if rows %}<table class="features"><tr><th>latent</th><th>rel. norm</th><th>effect teacher</th><th>effect student</th><th>top contexts</th></tr>
{% for r in rows %}<tr><td>{{ r.latent }}</td><td>{{ '%.2f'|format(r.relative_norm) }}</td>
<td>{{ '%.3f'|format(r.effect_teacher) }}</td><td>{{ '%.3f'|format(r.effect_student) }}</td>
<td>{% for c in contexts.get(r.latent|string, [])[:3] %}<div class="ctx"><small>{{ c.source }}</small> {{ c.before }}<mark>{{ c.token }}</mark>{{ c.after }}</div>{% endfor %}</td></tr>
{% endfor %}</table>{% else %}<p>none</p>{% endif %}
{% endfor %}{% endfor %}
</section>
"""
_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>circuitdiff features</title>
<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table.features{border-collapse:collapse;font-size:90%}
td,th{border-bottom:1px solid #ddd;padding:3px 6px;vertical-align:top}mark{background:#fd8}.ctx{white-space:pre-wrap}
.fig-svg{width:100%}</style></head><body>{{ section }}</body></html>"""
_ENV = Environment(autoescape=True)


def _histogram(counts: list[int]):  # noqa: ANN202
    fig = new_figure(6.0, 2.4)
    ax = fig.add_subplot()
    edges = np.linspace(0, 1, len(counts) + 1)
    ax.bar(edges[:-1], counts, width=edges[1] - edges[0], align="edge", color="#4477aa")
    ax.set_xlabel("relative decoder norm (0 = teacher only, 1 = student only)")
    ax.set_ylabel("live latents")
    ax.set_yscale("symlog")
    return fig


def top_rows(table: pd.DataFrame, task: str, n: int = SHOWN) -> dict[str, list[dict[str, Any]]]:
    """Per live class, the ``n`` latents with the largest |effect| in either model on ``task``."""
    rows = table[table["task"] == task]
    out = {}
    for cls in ("teacher_only", "student_only", "shared"):
        part = rows[rows["class"] == cls]
        score = part[["effect_teacher", "effect_student"]].abs().max(axis=1)
        best = part.loc[score.sort_values(ascending=False).index].head(n)
        out[cls] = best[["latent", "relative_norm", "effect_teacher", "effect_student"]].to_dict("records")
    return out


def feature_section(folder: Path) -> str:
    """The section's HTML from ``folder``'s features.json and features.parquet ('' when there are none);
    writes the histogram to ``folder/figures``."""
    folder = Path(folder)
    if not (folder / "features.json").is_file() or not (folder / "features.parquet").is_file():
        return ""
    s = json.loads((folder / "features.json").read_text())
    table = pd.read_parquet(folder / "features.parquet")
    fig = render_figure(lambda: _histogram(s["relative_norm_histogram"]), folder, "features_relative_norm",
                        "Relative decoder norm of the live latents.")
    return _ENV.from_string(_SECTION).render(
        s=s, histogram=Markup(fig.svg if fig else ""), contexts=s.get("contexts", {}),
        tops={task: top_rows(table, task) for task in s["tasks"]})


def write_feature_page(results: Any, folder: Path) -> Path:  # noqa: ANN401  (FeatureResults; no import cycle)
    """``folder/features.html`` from the files ``results.write`` put in ``folder``."""
    path = Path(folder) / "features.html"
    html = _ENV.from_string(_PAGE).render(section=Markup(feature_section(folder)))
    atomic_write(path, lambda p: p.write_text(html, encoding="utf-8"))
    return path
