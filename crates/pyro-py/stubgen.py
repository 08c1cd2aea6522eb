#!/usr/bin/env python3
"""Generate the type stubs of pyro_sdk from the built extension module.

    python crates/pyro-py/stubgen.py            # write python/pyro_sdk/__init__.pyi
    python crates/pyro-py/stubgen.py --check    # exit 1 when the committed stub is stale

Run it with the interpreter that has the module installed (``maturin develop``). What it
reads, all from the runtime module:

- every public method of ``Pyro`` and ``McpServer``: its signature (``inspect.signature``,
  from PyO3's ``__text_signature__``) and its docstring (the Rust SDK's doc text);
- ``_native._return_schemas()``: the JSON schema (schemars, from the Rust payload types) of
  each method's return payload, turned into one ``TypedDict`` per payload type (field
  docstrings from the schema descriptions, ``Optional`` for nullable, ``Literal`` for
  enums, ``NotRequired`` for keys that may be absent);
- the exception classes, re-exported from the pure-Python ``pyro_sdk.errors``.

Parameter types are derived from the defaults (``bool``/``int``/``str``) plus the small
tables below for the required and the ``None``-default parameters; an unknown parameter is
an error, so a new method cannot silently get an untyped stub. The output is deterministic.
"""

from __future__ import annotations

import argparse
import inspect
import keyword
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
STUB_PATH = HERE / "python" / "pyro_sdk" / "__init__.pyi"
REGENERATE = "cd crates/pyro-py && maturin develop --features pyo3/extension-module && python stubgen.py"

# Types of parameters without a default (always required) or with a `None` default (the
# `Optional[...]` is added for the latter). Anything else is typed from its default.
PARAM_TYPES: Dict[str, str] = {
    # ids and names
    "workspace_id": "str",
    "vm_id": "str",
    "shell_id": "str",
    "service_name": "str",
    "snapshot_name": "str",
    "command_id": "str",
    "environment": "str",
    "name": "str",
    "names": "StrList",
    "reference": "str",
    # command and content
    "command": "str",
    "text": "str",
    "patch": "str",
    "input": "str",
    # paths (host paths accept os.PathLike too)
    "path": "str",
    "source_path": "Union[str, os.PathLike[str]]",
    "output_path": "Union[str, os.PathLike[str]]",
    "seed_path": "Union[str, os.PathLike[str]]",
    "base_dir": "Union[str, os.PathLike[str]]",
    "cache_dir": "Union[str, os.PathLike[str]]",
    # structured inputs (the TypedDicts of INPUT_TYPES; a list argument is a list or a tuple,
    # a dict argument any mapping)
    "secrets": "Union[List[SecretSpec], Tuple[SecretSpec, ...]]",
    "secret_env": "Mapping[str, str]",
    "labels": "Mapping[str, str]",
    "clear_labels": "StrList",
    "readiness": "Readiness",
    "published_ports": "Union[List[PublishedPortSpec], Tuple[PublishedPortSpec, ...]]",
    # numbers that default to None
    "wait_for_idle_ms": "int",
    "ttl_seconds": "int",
    "idle_pause_seconds": "int",
    # constructor
    "manager": "None",
    "backend_name": "str",
    "progress": "Union[bool, Callable[[ProgressEvent], object]]",
}

# Return types of methods that return something other than a payload dict.
RETURN_TYPES: Dict[Tuple[str, str], str] = {
    ("Pyro", "create_server"): "McpServer",
    ("McpServer", "run"): "None",
}

# Types of read-only attributes (PyO3 getters), which have no signature to read.
ATTRIBUTE_TYPES: Dict[Tuple[str, str], str] = {
    ("McpServer", "profile"): 'Literal["vm-run", "workspace-core", "workspace-full"]',
    ("McpServer", "tool_names"): "List[str]",
}

# TypedDicts of the dict parameters (the shapes the reference SDK documents).
INPUT_TYPES = '''\
StrList = Union[List[str], Tuple[str, ...]]
"""A list argument of strings: a ``list`` or a ``tuple`` (not a ``str``)."""

class SecretValue(TypedDict):
    """A secret given by value (``secrets`` of ``create_workspace``)."""

    name: str
    """Secret name, ``[A-Za-z_][A-Za-z0-9_]{0,63}``; the guest file is ``/run/pyro-secrets/<name>``."""
    value: str
    """The value itself: non-empty UTF-8, at most 64 KiB."""

class SecretFile(TypedDict):
    """A secret read once, at create, from a host file (``secrets`` of ``create_workspace``)."""

    name: str
    """Secret name, ``[A-Za-z_][A-Za-z0-9_]{0,63}``; the guest file is ``/run/pyro-secrets/<name>``."""
    file_path: str
    """A regular UTF-8 host file, non-empty, at most 64 KiB."""

class ProgressEvent(TypedDict):
    """One step of long work, given to the ``progress`` callable of ``Pyro()``."""

    stage: str
    """Short machine-friendly stage name, e.g. ``debootstrap``, ``boot``, ``ready``."""
    message: str
    """Human sentence describing the step."""
    fraction: Optional[float]
    """Overall completion in 0.0..=1.0 when known."""

SecretSpec = Union[SecretValue, SecretFile]
"""One secret of ``create_workspace``: exactly one of ``value`` / ``file_path``."""

class PublishedPortSpec(TypedDict):
    """A guest port to publish on host ``127.0.0.1`` (``published_ports`` of ``start_service``)."""

    guest_port: int
    """TCP port the service listens on in the guest, 1..=65535."""
    host_port: NotRequired[Optional[int]]
    """Port to bind on host ``127.0.0.1``, 1025..=65535; ``None`` or absent picks a free one."""
'''
INPUT_NAMES = ["StrList", "SecretValue", "SecretFile", "ProgressEvent", "SecretSpec", "PublishedPortSpec"]


def camel(s: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", s) if p)


def rust_doc(text: Optional[str]) -> Optional[str]:
    """A Rust doc comment as plain text: intra-doc links (`` [`WorkspaceInfo`](crate::x) ``,
    `` [`Pyro::doctor`] ``) become their code span."""
    if not text:
        return text
    text = re.sub(r"\[(`[^`\]]+`)\]\([^)\s]*\)", r"\1", text)
    return re.sub(r"\[(`[^`\]]+`)\](?!\()", r"\1", text)


def doc_block(text: Optional[str], indent: str) -> List[str]:
    """A docstring as stub lines (triple-quoted, indented, escaped)."""
    if not text:
        return []
    text = inspect.cleandoc(text).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = text.splitlines()
    if text.endswith('"'):
        lines[-1] += " "
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    out = [f'{indent}"""{lines[0]}']
    out += [f"{indent}{line}" if line.strip() else "" for line in lines[1:]]
    out.append(f'{indent}"""')
    return out


class TypedDicts:
    """Turns the payload schemas into TypedDict classes, one per named schema."""

    def __init__(self) -> None:
        self.classes: Dict[str, List[str]] = {}
        self.schemas: Dict[str, Any] = {}

    def named(self, name: str, schema: Dict[str, Any], defs: Dict[str, Any]) -> str:
        """The TypedDict (or alias) for a named schema, generating it on first use."""
        if name in self.schemas:
            if self.schemas[name] != schema:
                raise SystemExit(f"stubgen: two different payload types are both named {name!r}")
            return name
        self.schemas[name] = schema
        self.classes[name] = []  # reserve (recursive types)
        if schema.get("type") == "object" and "properties" in schema:
            self.classes[name] = self.typed_dict(name, schema, defs)
        else:
            lines = [f"{name} = {self.type_of(schema, defs, name)}"]
            lines += doc_block(rust_doc(schema.get("description")), "")
            self.classes[name] = lines
        return name

    def typed_dict(self, name: str, schema: Dict[str, Any], defs: Dict[str, Any]) -> List[str]:
        required = set(schema.get("required", []))
        fields = []
        for key in sorted(schema["properties"]):
            sub = schema["properties"][key]
            ty = self.type_of(sub, defs, name + camel(key))
            if key not in required:
                ty = f"NotRequired[{ty}]"
            fields.append((key, ty, rust_doc(sub.get("description"))))
        if any(keyword.iskeyword(k) or not k.isidentifier() for k, _, _ in fields):
            items = ", ".join(f"{k!r}: {t}" for k, t, _ in fields)
            lines = [f"{name} = TypedDict({name!r}, {{{items}}})"]
            lines += doc_block(rust_doc(schema.get("description")), "")
            return lines
        lines = [f"class {name}(TypedDict):"]
        body = doc_block(rust_doc(schema.get("description")), "    ")
        if body:
            body.append("")
        for key, ty, desc in fields:
            body.append(f"    {key}: {ty}")
            body += doc_block(desc, "    ")
        return lines + (body or ["    pass"])

    def type_of(self, s: Dict[str, Any], defs: Dict[str, Any], hint: str) -> str:
        """The Python type of a (sub)schema; `hint` names an anonymous nested object."""
        if "$ref" in s:
            ref = s["$ref"]
            assert ref.startswith("#/$defs/"), ref
            ref_name = ref[len("#/$defs/"):]
            return self.named(ref_name, defs[ref_name], defs)
        if "const" in s:
            return f"Literal[{s['const']!r}]"
        if "enum" in s:
            values = [v for v in s["enum"] if v is not None]
            lit = f"Literal[{', '.join(repr(v) for v in values)}]"
            return f"Optional[{lit}]" if None in s["enum"] or self.nullable(s) else lit
        for combo in ("anyOf", "oneOf"):
            if combo in s:
                alts = [a for a in s[combo] if a.get("type") != "null"]
                null = len(alts) < len(s[combo])
                if alts and all("const" in a or "enum" in a for a in alts):
                    values = [v for a in alts for v in ([a["const"]] if "const" in a else a["enum"])]
                    inner = f"Literal[{', '.join(repr(v) for v in values)}]"
                else:
                    types = [self.type_of(a, defs, self.variant_name(hint, a, i) if len(alts) > 1 else hint)
                             for i, a in enumerate(alts)]
                    inner = types[0] if len(types) == 1 else f"Union[{', '.join(types)}]"
                return f"Optional[{inner}]" if null else inner
        if "allOf" in s and len(s["allOf"]) == 1:
            return self.type_of(s["allOf"][0], defs, hint)
        types = s.get("type")
        if types is None:
            return "Any"
        if isinstance(types, list):
            non_null = [t for t in types if t != "null"]
            inner = [self.type_of({**s, "type": t}, defs, hint) for t in non_null]
            one = inner[0] if len(inner) == 1 else f"Union[{', '.join(inner)}]"
            return f"Optional[{one}]" if "null" in types else one
        if types == "string":
            return "str"
        if types == "integer":
            return "int"
        if types == "number":
            return "float"
        if types == "boolean":
            return "bool"
        if types == "null":
            return "None"
        if types == "array":
            items = s.get("items")
            return f"List[{self.type_of(items, defs, hint + 'Item') if items else 'Any'}]"
        if types == "object":
            if "properties" in s:
                return self.named(hint, s, defs)
            extra = s.get("additionalProperties")
            if isinstance(extra, dict):
                return f"Dict[str, {self.type_of(extra, defs, hint + 'Value')}]"
            return "Dict[str, Any]"
        raise SystemExit(f"stubgen: unsupported schema type {types!r} in {hint}")

    @staticmethod
    def variant_name(hint: str, alt: Dict[str, Any], index: int) -> str:
        """Name of one alternative of a union: after its tag (`{"type": {"const": "file"}}`
        -> `ReadinessFile`) when it has one, else its position."""
        for key in sorted(alt.get("properties", {})):
            const = alt["properties"][key].get("const")
            if isinstance(const, str):
                return hint + camel(const)
        return f"{hint}{index}"

    @staticmethod
    def nullable(s: Dict[str, Any]) -> bool:
        t = s.get("type")
        return t == "null" or (isinstance(t, list) and "null" in t)


def return_type(tds: TypedDicts, method: str, schema: Dict[str, Any]) -> str:
    defs = schema.get("$defs", {})
    root = {k: v for k, v in schema.items() if k not in ("$defs", "$schema", "title")}
    if root.get("type") == "object" and "properties" in root:
        return tds.named(schema.get("title") or camel(method) + "Result", root, defs)
    return tds.type_of(root, defs, camel(method) + "Result")


def param_type(cls: str, meth: str, p: inspect.Parameter) -> str:
    d = p.default
    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
        raise SystemExit(f"stubgen: {cls}.{meth} takes *{p.name}; give it a stub type")
    if d is inspect.Parameter.empty or d is None:
        if p.name not in PARAM_TYPES:
            raise SystemExit(f"stubgen: no type for parameter {p.name!r} of {cls}.{meth}; add it to PARAM_TYPES")
        ty = PARAM_TYPES[p.name]
        return ty if d is inspect.Parameter.empty or ty == "None" else f"Optional[{ty}]"
    for t in (bool, int, float, str):
        if type(d) is t:
            return t.__name__
    raise SystemExit(f"stubgen: cannot type the default {d!r} of {cls}.{meth}({p.name})")


def render_signature(cls: str, meth: str, sig: inspect.Signature, ret: str) -> str:
    parts = []
    seen_kwonly = False
    prev_posonly = False
    params = list(sig.parameters.values())
    if not params or params[0].name != "self":
        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + params
    for i, p in enumerate(params):
        if prev_posonly and p.kind != p.POSITIONAL_ONLY:
            parts.append("/")
        prev_posonly = p.kind == p.POSITIONAL_ONLY
        if p.kind == p.KEYWORD_ONLY and not seen_kwonly:
            parts.append("*")
            seen_kwonly = True
        if i == 0:
            parts.append(p.name)
            continue
        text = f"{p.name}: {param_type(cls, meth, p)}"
        if p.default is not inspect.Parameter.empty:
            text += f" = {p.default!r}"
        parts.append(text)
    if prev_posonly:
        parts.append("/")
    return f"def {meth}({', '.join(parts)}) -> {ret}:"


def public_members(cls: type) -> List[str]:
    return sorted(n for n in dir(cls) if not n.startswith("_"))


def class_stub(cls: type, name: str, tds: Optional[TypedDicts], schemas: Dict[str, Any]) -> List[str]:
    # A PyO3 class without `subclass` cannot be subclassed: @final tells the type checker.
    lines = [] if cls.__flags__ & (1 << 10) else ["@final"]  # Py_TPFLAGS_BASETYPE
    lines.append(f"class {name}:")
    body = doc_block(rust_doc(cls.__doc__), "    ")
    members: List[Tuple[str, Any]] = [("__new__", None)] + [(m, getattr(cls, m)) for m in public_members(cls)]
    for meth, obj in members:
        if meth == "__new__":
            # PyO3's constructor is `__new__` (`#[new]`); a class without one (McpServer) has
            # no signature and gets no constructor in the stub.
            try:
                sig = inspect.signature(cls)
            except (TypeError, ValueError):
                continue
            text = render_signature(name, "__new__", sig, name).replace("def __new__(self", "def __new__(cls", 1)
            body += ["", "    " + text + " ..."]
            continue
        if not callable(obj):
            if (name, meth) not in ATTRIBUTE_TYPES:
                raise SystemExit(f"stubgen: no type for the attribute {name}.{meth}; add it to ATTRIBUTE_TYPES")
            body += ["", "    @property", f"    def {meth}(self) -> {ATTRIBUTE_TYPES[(name, meth)]}:"]
            doc = doc_block(rust_doc(obj.__doc__), "        ")
            body += doc if doc else ["        ..."]
            continue
        sig = inspect.signature(obj)
        if (name, meth) in RETURN_TYPES:
            ret = RETURN_TYPES[(name, meth)]
        elif tds is not None and meth in schemas:
            ret = return_type(tds, meth, schemas[meth])
        else:
            raise SystemExit(f"stubgen: no return type for {name}.{meth} (no schema, not in RETURN_TYPES)")
        body.append("")
        body.append("    " + render_signature(name, meth, sig, ret))
        doc = doc_block(rust_doc(obj.__doc__), "        ")
        body += doc if doc else ["        ..."]
    return lines + (body or ["    ..."])


def generate() -> str:
    import pyro_sdk
    from pyro_sdk import _native
    from pyro_sdk import errors

    schemas = _native._return_schemas()
    tds = TypedDicts()
    pyro_cls = class_stub(pyro_sdk.Pyro, "Pyro", tds, schemas)
    server_cls = class_stub(pyro_sdk.McpServer, "McpServer", None, {})
    clash = set(tds.classes) & set(INPUT_NAMES + ["Pyro", "McpServer"] + list(errors.__all__))
    if clash:
        raise SystemExit(f"stubgen: payload type names clash with other names: {sorted(clash)}")

    out: List[str] = []
    out += doc_block(pyro_sdk.__doc__, "")
    out += [
        "",
        "# Generated by crates/pyro-py/stubgen.py from the built extension module: do not edit.",
        f"# Regenerate: {REGENERATE}",
        "# The TypedDicts below exist only for type checkers: import them under `if TYPE_CHECKING:`.",
        "",
        "import os",
        "from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple, Union, final",
        "",
        "from typing_extensions import NotRequired, TypedDict",
        "",
        "from .errors import (",
    ]
    out += [f"    {e} as {e}," for e in sorted(errors.__all__)]
    out += [")", "", "__version__: str", ""]
    out += ["__all__ = ["] + [f"    {n!r}," for n in pyro_sdk.__all__] + ["]", ""]
    out += ["# Parameters", "", INPUT_TYPES.rstrip("\n"), "", "# Payloads", ""]
    for cname in sorted(tds.classes):
        out += tds.classes[cname]
        out.append("")
    out += ["# The SDK", ""]
    out += pyro_cls + [""] + server_cls
    text = "\n".join(out).rstrip("\n") + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when the committed stub differs")
    ap.add_argument("--output", type=Path, default=STUB_PATH)
    args = ap.parse_args()
    text = generate()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale; regenerate it: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
