"""Circuit discovery, which runs models: scoring/ordering of candidates (``scoring``), running a
circuit with everything outside it ablated (``evaluation``), the multi-threshold pruning
(``pruning``) and the measures that pruning does not fix (``measures``).

The circuits it returns are plain data (``circuitdiff.analysis.circuits``), compared without
models in ``circuitdiff.analysis``.
"""

from circuitdiff.circuits.discovery import Discovery, discover, other_ablation

__all__ = ["Discovery", "discover", "other_ablation"]
