"""Per-task checkpoints of a comparison, so a killed run restarts where it stopped.

After each task, ``OUT/tasks/<task>.json`` (its part of results.json, its warnings and a
fingerprint) and two Parquet files (its rows of the per-prompt and similarity tables)
are written atomically, the JSON last: a task counts as done only when its JSON exists,
parses, and has the fingerprint of the current run. The fingerprint covers what decides
the numbers: circuitdiff's version, the options (not the memory budget, which only
changes batching), both models (description and a sample of every weight tensor) and
the tokenised prompts. A stale or foreign checkpoint is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from circuitdiff.names import inside
from circuitdiff.results import write_json, write_table
from circuitdiff.schema import Note, json_ready

if TYPE_CHECKING:
    from circuitdiff.options import CompareOptions
    from circuitdiff.tasks.prepared import PreparedTask
    from circuitdiff.models.loading import LoadedModel

log = logging.getLogger("circuitdiff")
TASKS_DIR = "tasks"
SAMPLE = 256  # values read from every weight tensor, evenly spaced, plus its last one
FORMAT = 4
"""Bumped when a checkpoint's meaning changes (2: template-aligned ablation, sign-gated statistics;
3: structured notes; 4: paper A across tokenisations, the control pair)."""


@dataclass
class TaskRecord:
    """One finished task as it goes into the outputs: results entry, warnings, table rows."""

    name: str
    entry: dict[str, Any]
    notes: list[Note]
    per_prompt: pd.DataFrame
    similarity: pd.DataFrame


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach()
            h.update(str((tuple(t.shape), str(t.dtype))).encode())
            if t.device.type != "meta" and t.numel():
                flat = t.reshape(-1)
                sample = torch.cat([flat[:: max(1, flat.numel() // SAMPLE)], flat[-1:]])
                h.update(sample.to("cpu", torch.float64).numpy().tobytes())
        else:
            h.update(json.dumps(json_ready(part), sort_keys=True, default=str).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def model_fingerprint(lm: LoadedModel) -> str:
    """Description plus ~256 values of each weight tensor: cheap even for an 8B model, sharded or not
    (offloaded tensors, on the meta device, count by shape only)."""
    state = lm.model.state_dict(keep_vars=True)
    return _digest(asdict(lm.info), *(x for name in sorted(state) for x in (name, state[name])))


def options_fingerprint(options: CompareOptions) -> dict[str, Any]:
    data = {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(options).items()}
    data.pop("memory_budget", None)
    return data


def run_fingerprint(teacher: LoadedModel, student: LoadedModel, options: CompareOptions,
                    control: LoadedModel | None = None) -> str:
    """What decides a comparison's numbers: version, options and every model (the control's too, if any)."""
    from circuitdiff import __version__

    extra = () if control is None else (model_fingerprint(control),)
    return _digest(FORMAT, __version__, options_fingerprint(options), model_fingerprint(teacher),
                   model_fingerprint(student), *extra)


def task_fingerprint(run: str, item: PreparedTask) -> str:
    tensors = []
    for _task, enc in (item.teacher, item.student):
        tensors += [t for t in (enc.input_ids, enc.attention_mask, enc.read_pos, enc.answer_ids, enc.distractor_ids,
                                enc.corrupted_input_ids, enc.corrupted_attention_mask, enc.corrupted_read_pos,
                                enc.template_ids, enc.answer_tokens, enc.distractor_tokens, enc.distractor_input_ids,
                                enc.corrupted_distractor_input_ids)
                    if t is not None]
    return _digest(run, item.name, *tensors)


class TaskStore:
    """Finished tasks of one comparison under ``OUT/tasks``."""

    def __init__(self, out: Path, run: str) -> None:
        self.root = Path(out) / TASKS_DIR
        self.run = run

    def _paths(self, name: str) -> tuple[Path, Path, Path]:
        base = inside(self.root, name)
        return (base.with_name(base.name + ".json"), base.with_name(base.name + ".per_prompt.parquet"),
                base.with_name(base.name + ".similarity.parquet"))

    def load(self, item: PreparedTask) -> TaskRecord | None:
        """The stored record if it is complete and from this very run configuration, else None."""
        meta_path, pp_path, sim_path = self._paths(item.name)
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("fingerprint") != task_fingerprint(self.run, item) or meta.get("task") != item.name:
                log.warning("%s: checkpoint %s is from other options, models or prompts; recomputing",
                            item.name, meta_path)
                return None
            return TaskRecord(item.name, meta["entry"], [Note.from_json(n) for n in meta["notes"]], pd.read_parquet(pp_path),
                              pd.read_parquet(sim_path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s: checkpoint %s is unreadable (%s); recomputing", item.name, meta_path, type(exc).__name__)
            return None

    def save(self, item: PreparedTask, record: TaskRecord) -> None:
        meta_path, pp_path, sim_path = self._paths(item.name)
        write_table(pp_path, record.per_prompt)
        write_table(sim_path, record.similarity)
        write_json(meta_path, {"format": FORMAT, "task": item.name, "fingerprint": task_fingerprint(self.run, item),
                               "entry": record.entry, "notes": [n.to_json() for n in record.notes]})
