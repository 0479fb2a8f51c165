"""Typer options of the commands that run comparisons on a backend (``sweep``, ``trajectory``) or a device
(``compare``): one declaration each, so their names, defaults' types and help stay the same everywhere."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Address = Annotated[Optional[str], typer.Option(
    help="Ray cluster address (auto, ray://head:10001); default: a local Ray instance.")]
CpusPerJob = Annotated[float, typer.Option(min=0.0, help="Ray: CPUs each job reserves.")]
GpusPerJob = Annotated[float, typer.Option(min=0.0, help="Ray: GPUs each job reserves (e.g. 1, or 0.5 to share).")]
Dtype = Annotated[str, typer.Option(help="Weights dtype: float32 | bfloat16 | float16.")]
DeviceMap = Annotated[Optional[str], typer.Option(help="'auto': shard models over all devices (needs accelerate).")]
