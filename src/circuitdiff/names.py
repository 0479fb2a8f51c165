"""File names from untrusted strings (task names, pair names from sweep files).

A name from an input file must never choose where a file goes: it is reduced to a
plain slug and, whenever that changed it, suffixed with a short hash of the original so
that two different names never share a file.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from circuitdiff.errors import CircuitDiffError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 60
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


class UnsafePathError(CircuitDiffError):
    """An output path would leave the chosen output folder."""


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def safe_name(name: str) -> str:
    """A file-name slug of ``name``: only ``[A-Za-z0-9._-]``, no leading dot, bounded length."""
    slug = _UNSAFE.sub("-", name).strip(".-")[:MAX_STEM].strip(".-")
    if slug != name or not slug or slug.split(".")[0].lower() in _RESERVED:
        slug = f"{slug or 'x'}-{short_hash(name)}"
    return slug


def inside(root: Path, *parts: str) -> Path:
    """``root / safe parts``, checked to stay inside ``root`` even through symlinks."""
    path = root.joinpath(*(safe_name(p) for p in parts))
    base = root.resolve()
    if not path.resolve().is_relative_to(base):
        raise UnsafePathError(f"output path {path} leaves the output folder {root}")
    return path
