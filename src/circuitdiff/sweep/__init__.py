"""Sweeps over pairs, tasks, seeds and ablations, on the local or the Ray backend, resumable.

``load_sweep`` reads a sweep file, ``run_sweep`` runs its jobs and merges them. The
package uses what makes single comparisons resumable and safe (``circuitdiff.checkpoint``,
``circuitdiff.names``, ``circuitdiff.resources``). Nothing heavy is imported here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RunSettings", "SweepSpec", "load_sweep", "run_sweep"]


def __getattr__(name: str) -> Any:
    if name == "load_sweep" or name == "SweepSpec":
        from circuitdiff.sweep import spec

        return getattr(spec, name)
    if name == "RunSettings":
        from circuitdiff.sweep.jobs import RunSettings

        return RunSettings
    if name == "run_sweep":
        from circuitdiff.sweep.runner import run_sweep

        return run_sweep
    raise AttributeError(name)
