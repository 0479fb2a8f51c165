"""Typed JSON for dataclass records: plain JSON out (``json_ready``), checked records in (``Record.from_json``),
and a JSON Schema derived from the types (``record_json_schema``).

The machinery behind ``schema``: it knows nothing of what results.json holds, only how a dataclass with type
hints maps onto JSON. Standard library only, so anything may import it.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from circuitdiff.errors import CircuitDiffError

T = TypeVar("T")


class SchemaError(CircuitDiffError, ValueError):
    """A results file that does not follow the schema (or a newer schema than this version reads)."""


class Record:
    """Mixin for schema dataclasses: ``to_json`` gives plain JSON types, ``from_json`` checks and builds."""

    def to_json(self) -> dict[str, Any]:
        return json_ready(self)

    @classmethod
    def from_json(cls: type[T], data: Any) -> T:
        return _load(cls, data, cls.__name__)


def json_ready(value: Any) -> Any:
    """Plain JSON types from records, dicts, sequences and numpy values; NaN/inf become null.

    The one converter for everything circuitdiff writes as JSON (results, checkpoints,
    recipes), so a file never holds a NaN that strict JSON readers reject.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_ready(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (getattr(value, f.name) is None and f.metadata.get("omit_none"))}
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":  # arrays and numpy scalars
        return json_ready(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, vars(sys.modules[cls.__module__]))


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _load(tp: Any, value: Any, path: str) -> Any:
    """``value`` checked against the type ``tp`` and built into records; a mismatch names its path."""
    if tp is Any:
        return value
    if _is_union(tp):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _load(option, value, path)
            except SchemaError as exc:
                errors.append(str(exc))
        raise SchemaError(errors[0])
    origin = get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(f"{path}: expected a list, got {type(value).__name__}")
        return [_load(get_args(tp)[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{path}: expected an object, got {type(value).__name__}")
        return {k: _load(get_args(tp)[1], v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _load_record(tp, value, path)
    return _load_scalar(tp, value, path)


def _load_record(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise SchemaError(f"{path}: expected an object, got {type(value).__name__}")
    hints, kwargs = _hints(cls), {}
    names = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(value) - names)
    if extra:
        raise SchemaError(f"{path}: unknown key(s) {', '.join(extra)}")
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = _load(hints[f.name], value[f.name], f"{path}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(f"{path}: missing key '{f.name}'")
    return cls(**kwargs)


def _load_scalar(tp: Any, value: Any, path: str) -> Any:
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    if tp is type(None) and value is None:
        return None
    raise SchemaError(f"{path}: expected {getattr(tp, '__name__', tp)}, got {type(value).__name__} {value!r:.40}")


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def record_json_schema(root: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON Schema of the record type ``root`` (inline) and of every record it reaches (``$defs``)."""
    defs: dict[str, Any] = {}
    return _schema_of(root, defs, root), defs


def _schema_of(tp: Any, defs: dict[str, Any], root: type) -> dict[str, Any]:
    if tp is Any:
        return {}
    if _is_union(tp):
        return {"anyOf": [_schema_of(o, defs, root) for o in get_args(tp)]}
    origin = get_origin(tp)
    if origin is list:
        return {"type": "array", "items": _schema_of(get_args(tp)[0], defs, root)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(get_args(tp)[1], defs, root)}
    if dataclasses.is_dataclass(tp):
        if tp.__name__ not in defs and tp is not root:
            defs[tp.__name__] = {}  # placeholder against recursion
            defs[tp.__name__] = _record_schema(tp, defs, root)
        return _record_schema(tp, defs, root) if tp is root else {"$ref": f"#/$defs/{tp.__name__}"}
    return {"type": _JSON_TYPES[tp]}


def _record_schema(cls: type, defs: dict[str, Any], root: type) -> dict[str, Any]:
    hints = _hints(cls)
    fields = dataclasses.fields(cls)
    required = [f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    out: dict[str, Any] = {"type": "object", "description": (cls.__doc__ or cls.__name__).split("\n")[0],
                           "properties": {f.name: _schema_of(hints[f.name], defs, root) for f in fields},
                           "additionalProperties": False}
    if required:
        out["required"] = required
    return out
