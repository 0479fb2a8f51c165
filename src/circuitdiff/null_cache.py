"""The chance level's random students kept on disk, for every later run on the same architecture.

The draws depend on the student's architecture, never its weights (``null.py``): comparing
several students of one shape with one teacher (recipes, checkpoints, sweep jobs on other
processes or machines sharing a folder) would draw the same random students every time.
A folder given as ``null_cache`` keeps them, one ``.npz`` of arrays (no pickle) and one
``.json`` per (architecture, options, prompts), named by the hash of everything that
decides them: the model class, its config (not where it was loaded from), dtype, device
type, the null's options, the encoded prompts tensor by tensor, and the versions of
circuitdiff, torch and transformers (a new version may draw differently). The memory budget
is not in the key: it only splits prompts into micro-batches, which changes float rounding,
not values. A file that cannot be read is recomputed and written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from circuitdiff.analysis.calibration import NullDraw
from circuitdiff.models.loading import LoadedModel
from circuitdiff import null
from circuitdiff.options import CompareOptions, OptionsError
from circuitdiff.results import atomic_write
from circuitdiff.shared_runs import NULL_OPTIONS, architecture
from circuitdiff.tasks import EncodedTask

ENV = "CIRCUITDIFF_NULL_CACHE"
"""Environment variable naming the default cache folder (none: no cache)."""


def default_folder() -> Path | None:
    value = os.environ.get(ENV, "").strip()
    return Path(value).expanduser() if value else None


def _versions() -> dict[str, str]:
    import transformers

    from circuitdiff import __version__

    return {"circuitdiff": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def cache_key(student: LoadedModel, encoded: EncodedTask, options: CompareOptions) -> str:
    """Hex digest of everything the draws of ``student``'s architecture on ``encoded`` depend on."""
    name, config, dtype, device = architecture(student)
    h = hashlib.sha256()
    h.update(json.dumps({"model": name, "config": config, "dtype": dtype, "device": torch.device(device).type,
                         "options": [repr(getattr(options, o)) for o in NULL_OPTIONS], "n_check": null.N_CHECK,
                         "draws_version": null.DRAWS_VERSION,
                         "versions": _versions()}, sort_keys=True).encode())
    for f in fields(EncodedTask):
        value = getattr(encoded, f.name)
        h.update(f.name.encode())
        if isinstance(value, torch.Tensor):
            h.update(f"{value.dtype}{tuple(value.shape)}".encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


class NullCache:
    """Random-student draws in ``folder``, by ``cache_key``; ``hits`` and ``writes`` count what happened."""

    def __init__(self, folder: str | Path) -> None:
        """Creates ``folder`` now, so that an unusable one fails before any model loads."""
        self.folder = Path(folder).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise OptionsError(f"null cache '{folder}' is an existing file; choose a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OptionsError(f"cannot create null cache folder '{folder}' ({exc.strerror or type(exc).__name__})") from None
        self.hits = 0
        self.writes = 0

    def load(self, student: LoadedModel, encoded: EncodedTask, options: CompareOptions) -> list[NullDraw] | None:
        key = cache_key(student, encoded, options)
        try:
            meta = json.loads((self.folder / f"{key}.json").read_text())
            with np.load(self.folder / f"{key}.npz", allow_pickle=False) as arrays:
                draws = [NullDraw(seed=int(d["seed"]), effects=arrays[f"{k}/effects"],
                                  read_acts={c: arrays[f"{k}/read/{c}"] for c in meta["components"]},
                                  checked=d["checked"]) for k, d in enumerate(meta["draws"])]
        except (OSError, ValueError, KeyError):  # absent, partial or from another layout: recompute
            return None
        if len(draws) != options.n_null:
            return None
        self.hits += 1
        return draws

    def keep(self, student: LoadedModel, encoded: EncodedTask, options: CompareOptions,
             draws: Sequence[NullDraw]) -> None:
        """Write atomically (``results.atomic_write``), so a reader never sees half a file; a failed
        write (full disk) is a warning, never the end of a run whose draws are computed."""
        if not draws:
            return
        key = cache_key(student, encoded, options)
        arrays: dict[str, np.ndarray] = {}
        for k, d in enumerate(draws):
            arrays[f"{k}/effects"] = np.asarray(d.effects)
            arrays.update({f"{k}/read/{c}": np.asarray(v) for c, v in d.read_acts.items()})
        meta: dict[str, Any] = {"model": student.name, "task": encoded.task_name,
                                "components": list(draws[0].read_acts),
                                "draws": [{"seed": d.seed, "checked": d.checked} for d in draws]}
        try:
            atomic_write(self.folder / f"{key}.npz", lambda p: _savez(p, arrays))
            atomic_write(self.folder / f"{key}.json", lambda p: p.write_text(json.dumps(meta)))
        except OSError as exc:
            warnings.warn(f"circuitdiff: could not keep the random students in '{self.folder}' ({exc})", stacklevel=2)
            return
        self.writes += 1


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as f:  # a file object: given a path without ".npz", np.savez would append it
        np.savez(f, **arrays)
