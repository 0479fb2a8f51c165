"""``circuitdiff reproduce``: the reference study's protocol on its pairs, its figures beside circuitdiff's.

``plan`` decides the jobs (no model loads), ``run`` runs them with the sweep's job
machinery (each saved as it finishes), ``table`` reads their ``results.json`` into one long
table beside ``published``, and ``render`` pivots it for people (Markdown, HTML).
"""

from circuitdiff.reproduce.plan import Plan, ReproJob, StudyPair, builtin_study_pairs, make_plan, study_pairs
from circuitdiff.reproduce.published import published

__all__ = ["Plan", "ReproJob", "StudyPair", "builtin_study_pairs", "make_plan", "published", "study_pairs"]
