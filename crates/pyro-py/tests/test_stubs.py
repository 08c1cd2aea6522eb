"""The type stubs (`python/pyro_sdk/__init__.pyi`) against the built module.

No guest is booted here: these tests read the runtime classes and the schemas only.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List

import pytest

import pyro_sdk
from pyro_sdk import _native

CRATE = Path(__file__).resolve().parent.parent
STUB = CRATE / "python" / "pyro_sdk" / "__init__.pyi"


def _stubgen():
    spec = importlib.util.spec_from_file_location("stubgen", CRATE / "stubgen.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


stubgen = _stubgen()


def _public(cls: type) -> List[str]:
    return sorted(n for n in dir(cls) if not n.startswith("_"))


def _stub_classes() -> Dict[str, ast.ClassDef]:
    tree = ast.parse(STUB.read_text())
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


def _stub_methods(cls: ast.ClassDef) -> Dict[str, ast.FunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def _stub_signature(fn: ast.FunctionDef) -> List[tuple]:
    """(name, kind, default) of each parameter but `self`, as inspect names them."""
    a = fn.args
    out: List[tuple] = []
    positional = a.posonlyargs + a.args
    defaults: List[Any] = [inspect.Parameter.empty] * (len(positional) - len(a.defaults))
    defaults += [ast.literal_eval(d) for d in a.defaults]
    for i, (p, d) in enumerate(zip(positional, defaults)):
        kind = "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        out.append((p.arg, kind, d))
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((p.arg, "KEYWORD_ONLY", inspect.Parameter.empty if d is None else ast.literal_eval(d)))
    return out[1:]  # self


def _runtime_signature(obj: Any) -> List[tuple]:
    params = list(inspect.signature(obj).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return [(p.name, p.kind.name, p.default) for p in params]


def test_committed_stub_is_the_generators_output():
    assert STUB.exists(), f"{STUB} is missing; generate it: {stubgen.REGENERATE}"
    assert STUB.read_text() == stubgen.generate(), (
        f"{STUB.relative_to(CRATE)} is stale (the module's methods, docs or payload types changed); "
        f"regenerate it and commit the result: {stubgen.REGENERATE}"
    )


def test_schema_table_and_runtime_methods_agree():
    schemas = set(_native._return_schemas())
    non_payload = {m for (cls, m) in stubgen.RETURN_TYPES if cls == "Pyro"}
    methods = set(_public(pyro_sdk.Pyro))
    assert methods - non_payload - schemas == set(), "Pyro methods without a payload schema (add them to schema.rs)"
    assert schemas - methods == set(), "schema.rs lists methods the Pyro class does not have"
    assert non_payload <= methods


@pytest.mark.parametrize("cls_name", ["Pyro", "McpServer"])
def test_every_public_member_has_a_stub_with_the_runtime_signature_and_a_docstring(cls_name):
    runtime_cls = getattr(pyro_sdk, cls_name)
    stub_cls = _stub_classes()[cls_name]
    stubs = _stub_methods(stub_cls)
    assert ast.get_docstring(stub_cls), f"{cls_name} has no docstring in the stub"
    for name in _public(runtime_cls):
        assert name in stubs, f"{cls_name}.{name} is not in the stub"
        runtime = getattr(runtime_cls, name)
        if callable(runtime):
            assert _stub_signature(stubs[name]) == _runtime_signature(runtime), f"{cls_name}.{name}: signature differs"
        else:  # a getter: a read-only property in the stub
            decorators = [ast.unparse(d) for d in stubs[name].decorator_list]
            assert decorators == ["property"], f"{cls_name}.{name} is an attribute; the stub must say @property"
        assert (runtime.__doc__ or "").strip(), f"{cls_name}.{name} has no runtime docstring"
        assert ast.get_docstring(stubs[name]), f"{cls_name}.{name} has no docstring in the stub"
        assert stubs[name].returns is not None
    stub_public = {n for n in stubs if not n.startswith("_")}
    assert stub_public == set(_public(runtime_cls)), "the stub has methods the runtime class lacks"
    if "__new__" in stubs:
        assert _stub_signature(stubs["__new__"]) == _runtime_signature(runtime_cls)


def test_exceptions_and_names_are_exported_by_the_stub():
    tree = ast.parse(STUB.read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
        if isinstance(node, (ast.AnnAssign, ast.Assign)):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    missing = set(pyro_sdk.__all__) - names
    assert not missing, f"exported at run time but not in the stub: {sorted(missing)}"


def test_payload_typeddicts_carry_the_rust_docs():
    classes = _stub_classes()
    info = classes["WorkspaceInfo"]
    assert "TypedDict" in ast.unparse(info.bases[0])
    fields = [n.target.id for n in info.body if isinstance(n, ast.AnnAssign)]
    assert "workspace_id" in fields and "state" in fields
    # Every field is followed by its docstring from the Rust doc comment.
    body = info.body
    documented = sum(
        1
        for i, n in enumerate(body)
        if isinstance(n, ast.AnnAssign) and i + 1 < len(body) and isinstance(body[i + 1], ast.Expr)
    )
    assert documented == len(fields)


MYPY_SAMPLE = """
from typing import List
from pyro_sdk import Pyro, PyroError, NotFoundError

def main(pyro: Pyro) -> int:
    ws = pyro.create_workspace(
        environment="debian:12",
        secrets=[{"name": "TOKEN", "value": "x"}, {"name": "KEY", "file_path": "/tmp/key"}],
        labels={"team": "a"},
    )
    workspace_id: str = ws["workspace_id"]
    run = pyro.exec_workspace(workspace_id, command="true", secret_env={"TOKEN": "TOKEN"})
    code: int = run["exit_code"]
    names: List[str] = [env["name"] for env in pyro.list_environments()]
    service = pyro.start_service(
        workspace_id, "web", command="python3 -m http.server 8080",
        readiness={"type": "tcp", "address": "127.0.0.1:8080"},
        published_ports=[{"guest_port": 8080}],
    )
    host_port: int = service["published_ports"][0]["host_port"]
    last = pyro.status_workspace(workspace_id)["last_command"]
    if last is not None:
        code += last["exit_code"]
    try:
        pyro.delete_workspace(workspace_id)
    except NotFoundError as e:
        text: str = e.code + e.message
    except PyroError:
        pass
    return code + host_port + len(names)
"""


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install mypy)")
    (tmp_path / "client.py").write_text(textwrap.dedent(source))
    env = dict(os.environ, MYPYPATH=str(CRATE / "python"))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental",
         "client.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


def test_a_typed_client_type_checks_and_a_misspelt_key_does_not(tmp_path):
    ok = _mypy(tmp_path, MYPY_SAMPLE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = _mypy(tmp_path, MYPY_SAMPLE.replace('ws["workspace_id"]', 'ws["workspace_idd"]'))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert 'has no key "workspace_idd"' in bad.stdout, bad.stdout


def test_mypy_stubtest_finds_nothing_but_the_stub_only_types(tmp_path):
    """mypy's stubtest compares the stub with the runtime module (names, kinds, defaults,
    @final). The payload and parameter TypedDicts exist only in the stub, by design."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install mypy)")
    tree = ast.parse(STUB.read_text())
    stub_only = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and n.name not in ("Pyro", "McpServer")]
    stub_only += [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                  if isinstance(t, ast.Name) and t.id != "__all__"]
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text("".join(f"pyro_sdk.{name}\n" for name in stub_only))
    env = dict(os.environ, MYPYPATH=str(CRATE / "python"))
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "pyro_sdk", "--allowlist", str(allowlist)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _shape_check():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import shape_check

    return shape_check


def test_shape_check_accepts_real_payloads_and_names_the_path_of_a_mismatch(tmp_path):
    check_shape = _shape_check().check_shape
    pyro = pyro_sdk.Pyro(base_dir=str(tmp_path))
    envs = pyro.list_environments()
    check_shape("list_environments", envs)
    check_shape("inspect_environment", pyro.inspect_environment(envs[0]["name"]))
    check_shape("list_workspaces", pyro.list_workspaces())
    check_shape("reap_expired", pyro.reap_expired())

    bad = [dict(envs[0])]
    bad[0]["installed"] = "yes"
    with pytest.raises(AssertionError, match=r"list_environments: \$\[0\]\.installed: expected boolean, got str"):
        check_shape("list_environments", bad)
    del bad[0]["installed"]
    with pytest.raises(AssertionError, match=r"\$\[0\]: missing key 'installed'"):
        check_shape("list_environments", bad)
    with pytest.raises(AssertionError, match=r"\$\.deleted_vm_idz: key not in the schema"):
        check_shape("reap_expired", {"deleted_vm_ids": [], "count": 0, "deleted_vm_idz": []})
    with pytest.raises(AssertionError, match=r"\$\.count: -1 is below the minimum 0"):
        check_shape("reap_expired", {"deleted_vm_ids": [], "count": -1})
    with pytest.raises(AssertionError, match=r"\$\.count: expected integer, got bool"):
        check_shape("reap_expired", {"deleted_vm_ids": [], "count": True})
    with pytest.raises(AssertionError, match="no payload schema"):
        check_shape("create_server", {})
