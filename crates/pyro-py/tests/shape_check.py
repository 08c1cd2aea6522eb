"""Check a `Pyro` method's result against the JSON schema of its Rust payload type.

    from shape_check import check_shape
    check_shape("status_workspace", pyro.status_workspace(ws_id))

The schemas come from ``pyro_sdk._native._return_schemas()`` (schemars, the same types and
settings as the MCP server's ``outputSchema``, and the source of the ``TypedDict``s of the
stubs). A mismatch raises ``AssertionError`` naming the method and the path of the value,
e.g. ``status_workspace: $.last_command.exit_code: expected integer, got str``.

The validator covers what schemars emits (type, properties, required, additionalProperties,
items, $ref into $defs, anyOf/oneOf/allOf, enum, const, minimum/maximum) and is stricter than
JSON Schema in one way: an object key that its schema does not list under ``properties`` is a
mismatch (the stubs could not show it), unless the schema has ``additionalProperties``.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List

__all__ = ["check_shape", "schema_errors"]


@functools.lru_cache(maxsize=None)
def _schemas() -> Dict[str, Any]:
    from pyro_sdk import _native

    return _native._return_schemas()


def check_shape(method: str, result: Any) -> None:
    """Raise AssertionError unless ``result`` matches the payload schema of ``method``."""
    schemas = _schemas()
    if method not in schemas:
        raise AssertionError(f"{method}: no payload schema (not in _native._return_schemas())")
    errors = schema_errors(schemas[method], result)
    if errors:
        raise AssertionError(f"{method}: " + "; ".join(errors[:5]) + (" ..." if len(errors) > 5 else ""))


def schema_errors(schema: Dict[str, Any], value: Any) -> List[str]:
    """Every mismatch of ``value`` against ``schema`` (a root schema with optional $defs)."""
    out: List[str] = []
    _check(schema, value, "$", schema.get("$defs", {}), out)
    return out


_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _check(s: Any, v: Any, path: str, defs: Dict[str, Any], out: List[str]) -> None:
    if s is True or s == {}:
        return
    if s is False:
        out.append(f"{path}: no value allowed here")
        return
    if "$ref" in s:
        ref = s["$ref"]
        if not ref.startswith("#/$defs/") or ref[len("#/$defs/"):] not in defs:
            out.append(f"{path}: unresolvable $ref {ref}")
            return
        _check(defs[ref[len("#/$defs/"):]], v, path, defs, out)
    for key in ("anyOf", "oneOf"):
        if key in s:
            alt_errors = []
            matches = 0
            for alt in s[key]:
                errs: List[str] = []
                _check(alt, v, path, defs, errs)
                if errs:
                    alt_errors.append(errs[0])
                else:
                    matches += 1
            if matches == 0:
                out.append(f"{path}: matches none of {key} ({' | '.join(alt_errors)})")
            elif key == "oneOf" and matches > 1:
                out.append(f"{path}: matches {matches} alternatives of oneOf")
    for alt in s.get("allOf", []):
        _check(alt, v, path, defs, out)
    if "const" in s and v != s["const"]:
        out.append(f"{path}: expected {s['const']!r}, got {v!r}")
    if "enum" in s and v not in s["enum"]:
        out.append(f"{path}: {v!r} is not one of {s['enum']!r}")
    types = s.get("type")
    if types is not None:
        types = types if isinstance(types, list) else [types]
        if not any(_TYPES[t](v) for t in types):
            out.append(f"{path}: expected {' or '.join(types)}, got {_tname(v)} {v!r:.60}")
            return
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in s and v < s["minimum"]:
            out.append(f"{path}: {v} is below the minimum {s['minimum']}")
        if "maximum" in s and v > s["maximum"]:
            out.append(f"{path}: {v} is above the maximum {s['maximum']}")
    if isinstance(v, list) and isinstance(s.get("items"), (dict, bool)):
        for i, item in enumerate(v):
            _check(s["items"], item, f"{path}[{i}]", defs, out)
    if isinstance(v, dict):
        props = s.get("properties", {})
        for req in s.get("required", []):
            if req not in v:
                out.append(f"{path}: missing key {req!r}")
        extra = s.get("additionalProperties")
        for key, item in v.items():
            sub = f"{path}.{key}"
            if key in props:
                _check(props[key], item, sub, defs, out)
            elif isinstance(extra, dict):
                _check(extra, item, sub, defs, out)
            elif extra is False or (extra is None and "properties" in s and key not in _known_keys(s, defs)):
                out.append(f"{sub}: key not in the schema")


def _known_keys(s: Any, defs: Dict[str, Any]) -> set:
    """Keys an object schema describes, its combinators' included (a flattened enum puts
    its variants' keys under oneOf next to the struct's own properties)."""
    if not isinstance(s, dict):
        return set()
    if "$ref" in s:
        s = defs.get(s["$ref"][len("#/$defs/"):], {})
    keys = set(s.get("properties", {}))
    for key in ("anyOf", "oneOf", "allOf"):
        for alt in s.get(key, []):
            keys |= _known_keys(alt, defs)
    return keys
