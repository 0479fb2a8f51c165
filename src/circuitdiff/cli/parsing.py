"""Option parsing shared by the commands (``compare``, ``reproduce``): one definition of each format."""

from __future__ import annotations

from circuitdiff.errors import CircuitDiffError


def parse_thresholds(text: str) -> tuple[float, ...]:
    """'0.1,0.2' -> (0.1, 0.2); each strictly between 0 and 1."""
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise CircuitDiffError(f"circuit thresholds must be comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 < v < 1 for v in values):
        raise CircuitDiffError(f"circuit thresholds must lie strictly between 0 and 1, got {text!r}")
    return values
