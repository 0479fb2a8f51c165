"""Devices, dtypes and memory: parse the CLI's strings and keep a run under its budget.

``--max-memory`` bounds the activation memory of one forward pass; the sweeps split
prompts and stacked variants into micro-batches that fit it. ``auto`` takes half of
the free accelerator memory after the models are loaded. If a pass still runs out of
memory (the estimate is rough), the task is retried with half the budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import torch

from circuitdiff.errors import CircuitDiffError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIN_BUDGET = 16 << 20  # below this, retrying with less memory is pointless
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
T = TypeVar("T")


class ResourceError(CircuitDiffError):
    """A device, dtype or memory setting is invalid or cannot be met."""


def parse_memory(text: str | int | None) -> int | None:
    """Bytes from ``4GB``, ``512MiB``, ``1e9``-free plain integers; None or ``auto`` stay None."""
    if text is None or isinstance(text, int):
        return text
    if text.strip().lower() == "auto":
        return None
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise ResourceError(f"cannot read memory size '{text}' (examples: 4GB, 512MiB, 2000000000, auto)")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value < MIN_BUDGET:
        raise ResourceError(f"memory budget {text} is below the minimum of {MIN_BUDGET >> 20} MiB")
    return value


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ResourceError(f"unknown dtype '{name}'; choose one of {', '.join(DTYPES)}") from None


def check_device(device: str, device_map: str | None) -> None:
    """Fail early, in one line, on a device that does not exist here."""
    if device_map not in (None, "auto"):
        raise ResourceError(f"--device-map must be 'auto' (got '{device_map}')")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ResourceError(f"unknown device '{device}' (examples: cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ResourceError(f"device '{device}' requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ResourceError(f"device '{device}' does not exist ({torch.cuda.device_count()} CUDA devices)")
    if device_map == "auto":
        try:
            import accelerate  # noqa: F401
        except ImportError:
            raise ResourceError("--device-map auto needs accelerate: pip install 'circuitdiff[accelerate]'") from None


def auto_budget(device: torch.device, default: int) -> int:
    """Half the free memory of a CUDA device (after the models are loaded); ``default`` elsewhere."""
    if device.type != "cuda":
        return default
    free, _total = torch.cuda.mem_get_info(device)
    return max(MIN_BUDGET, free // 2)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def with_less_memory(run: Callable[[int], T], budget: int, what: str) -> T:
    """``run(budget)``, halving the budget after each out-of-memory error until MIN_BUDGET."""
    while True:
        try:
            return run(budget)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_oom(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if budget // 2 < MIN_BUDGET:
                raise ResourceError(f"out of memory on {what} even with a {budget >> 20} MiB activation budget; "
                                    "use --device-map auto, a smaller --dtype or fewer prompts") from None
            budget //= 2
