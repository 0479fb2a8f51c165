"""Resumable checkpoints without pickle: weights and optimizer tensors in safetensors, the rest JSON.

A checkpoint folder is a complete Hugging Face model folder (config, safetensors, tokenizer)
plus ``optimizer.safetensors`` and ``trainer_state.json``. It is written next to its final
place and swapped in with renames, so an interruption mid-save leaves the previous one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from circuitdiff.lab.errors import CheckpointError

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
SNAPSHOTS_DIR = "checkpoints"
"""Under a run's folder: one loadable model folder per saved step, ``step-000000`` first."""


def optimizer_to_safe(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into a flat tensor dict and JSON-ready metadata."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slots in sd["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().clone().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_safe(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the state_dict that ``optimizer.load_state_dict`` expects."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, extra in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(extra)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(folder: Path, model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Write model, tokenizer, optimizer and trainer state to ``folder`` atomically."""
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tensors, meta = optimizer_to_safe(optimizer)
    save_file(tensors, str(tmp / OPTIMIZER_FILE))
    (tmp / STATE_FILE).write_text(json.dumps({**state, "optimizer": meta}, indent=1))
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(folder: Path) -> Path | None:
    """The usable checkpoint: ``folder``, or its ``.old`` twin if a save was cut between renames."""
    for cand in (folder, folder.with_name(folder.name + ".old")):
        if (cand / STATE_FILE).is_file() and (cand / OPTIMIZER_FILE).is_file():
            return cand
    return None


def load_trainer_state(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer state, optimizer state_dict) of a checkpoint folder."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        opt = optimizer_from_safe(load_file(str(folder / OPTIMIZER_FILE)), state.pop("optimizer"))
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"unreadable checkpoint in {folder}: {exc}") from exc
    return state, opt


def snapshot_folder(run_dir: Path, step: int) -> Path:
    """Where the model as it was after ``step`` updates is kept: names sort in step order."""
    return run_dir / SNAPSHOTS_DIR / f"step-{step:06d}"


def save_snapshot(run_dir: Path, model: Any, tokenizer: Any, step: int) -> Path:
    """Keep the model after ``step`` updates as a plain model folder (safetensors, config,
    tokenizer) that any loader reads: the trajectory of a run is compared from these.

    Written beside its place and renamed in, so a folder that exists is complete; an existing
    one (a resumed run passing the same step again) is kept as it is.
    """
    folder = snapshot_folder(run_dir, step)
    if folder.is_dir():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)
    return folder
