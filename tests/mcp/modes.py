"""Modes, schemas and the review summary through the official Python MCP client.

usage: modes.py schemas   every profile and mode: tools/list sorted; every input and output
                          schema valid against the JSON Schema 2020-12 metaschema, using only
                          standard formats (strict format mode); inspect read-only.
       modes.py flow      (real VMs) repro-fix fixes a failing test in a seeded workspace;
                          workspace_summary's diff matches workspace_diff; inspect and
                          review-eval servers see the same workspace; a parameter a mode
                          dropped is refused.
"""

import asyncio
import contextlib
import os
import sys
import tempfile

import jsonschema
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError

from common import PYRO, PROFILES, Tools, initialize, log, server_env

# The background-command tools: in the modes that run long builds and test suites.
BACKGROUND = {"workspace_command_kill", "workspace_command_read", "workspace_command_status", "workspace_command_wait"}

MODES = {
    "repro-fix": {
        "workspace_create", "workspace_delete", "workspace_diff", "workspace_exec", "workspace_export",
        "workspace_file_list", "workspace_file_read", "workspace_file_write", "workspace_logs",
        "workspace_patch_apply", "workspace_reset", "workspace_status", "workspace_summary",
    } | BACKGROUND,
    "inspect": {
        "service_list", "service_logs", "service_status", "snapshot_list", "workspace_diff",
        "workspace_disk_list", "workspace_disk_read", "workspace_file_list", "workspace_file_read",
        "workspace_list", "workspace_logs", "workspace_status", "workspace_summary",
    },
    "cold-start": {
        "vm_list_environments", "vm_run", "workspace_create", "workspace_delete", "workspace_exec",
        "workspace_file_list", "workspace_file_read", "workspace_list", "workspace_logs",
        "workspace_status", "workspace_sync_push",
    } | BACKGROUND,
    "review-eval": {
        "workspace_diff", "workspace_exec", "workspace_export", "workspace_file_list",
        "workspace_file_read", "workspace_list", "workspace_logs", "workspace_status", "workspace_summary",
    },
}

# JSON Schema 2020-12, Validation section 7.3: the only formats a schema may use.
STANDARD_FORMATS = {
    "date-time", "date", "time", "duration", "email", "idn-email", "hostname", "idn-hostname",
    "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uuid", "uri-template",
    "json-pointer", "relative-json-pointer", "regex",
}


@contextlib.asynccontextmanager
async def session(*serve_args):
    params = StdioServerParameters(command=PYRO, args=["mcp", "serve", *serve_args], env=server_env())
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            yield s, await initialize(s, None)


def formats(schema, path="#"):
    """Every (path, format) in a schema."""
    out = []
    if isinstance(schema, dict):
        for k, v in schema.items():
            if k == "format" and isinstance(v, str):
                out.append((path, v))
            elif k not in ("enum", "const", "default", "examples"):
                out += formats(v, f"{path}/{k}")
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            out += formats(v, f"{path}/{i}")
    return out


def check_schema(where, schema):
    # The metaschema, with format checking on (a format value must itself be a string, ...).
    meta = jsonschema.Draft202012Validator.META_SCHEMA
    jsonschema.Draft202012Validator(meta, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    bad = [(p, f) for p, f in formats(schema) if f not in STANDARD_FORMATS]
    assert not bad, f"{where}: non-standard formats {bad[:5]} ({len(bad)} in all)"


async def schemas():
    surfaces = [(("--profile", p), names) for p, names in PROFILES.items()]
    surfaces += [(("--mode", m), names) for m, names in MODES.items()]
    for args, expected in surfaces:
        async with session(*args) as (s, _):
            tools = (await s.list_tools()).tools
        names = [t.name for t in tools]
        assert names == sorted(names), f"{args}: tools/list is not sorted: {names}"
        assert set(names) == expected, f"{args}: {sorted(set(names) ^ expected)}"
        for t in tools:
            check_schema(f"{args} {t.name} input", t.inputSchema)
            assert t.outputSchema, f"{args} {t.name}: no outputSchema"
            check_schema(f"{args} {t.name} output", t.outputSchema)
            if args == ("--mode", "inspect"):
                assert t.annotations and t.annotations.readOnlyHint is True, f"inspect {t.name} is not read-only"
            if args[0] == "--mode":
                assert "allow_host_compat" not in t.inputSchema.get("properties", {}), f"{args} {t.name}"
        log(f"{' '.join(args)}: {len(tools)} tools, sorted, schemas standard")


SEED = {
    "calc.sh": "add() {\n    echo $(($1 - $2))\n}\n",
    "test_calc.sh": ". ./calc.sh\nr=$(add 2 3)\nif [ \"$r\" = 5 ]; then echo PASS; else echo FAIL got $r; exit 1; fi\n",
    "README": "calc\n",
}
FIX = "--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,3 @@\n add() {\n-    echo $(($1 - $2))\n+    echo $(($1 + $2))\n }\n"


async def flow():
    seed = tempfile.mkdtemp(prefix="pyro-seed-")
    for name, text in SEED.items():
        with open(os.path.join(seed, name), "w") as f:
            f.write(text)
    async with session("--mode", "repro-fix") as (s, info):
        assert "repro-fix" in (info.instructions or ""), info.instructions
        t = Tools(s, (await s.list_tools()).tools)
        msg = await t.err("workspace_create", environment="debian:12", seed_path=seed, allow_host_compat=True)
        assert "has no parameter 'allow_host_compat'" in msg and "invalid_input" in msg, msg
        ws = await t.ok("workspace_create", environment="debian:12", seed_path=seed)
        wid = ws["workspace_id"]
        try:
            fail = await t.ok("workspace_exec", workspace_id=wid, command="sh test_calc.sh")
            assert fail["exit_code"] == 1 and "FAIL got -1" in fail["stdout"], fail
            src = await t.ok("workspace_file_read", workspace_id=wid, path="calc.sh")
            assert "$1 - $2" in src["content"], src
            await t.ok("workspace_patch_apply", workspace_id=wid, patch=FIX)
            await t.ok("workspace_file_write", workspace_id=wid, path="NOTES", text="fixed add\n")
            ok = await t.ok("workspace_exec", workspace_id=wid, command="sh test_calc.sh")
            assert ok["exit_code"] == 0 and ok["stdout"] == "PASS\n", ok
            summary = await t.ok("workspace_summary", workspace_id=wid)
            diff = await t.ok("workspace_diff", workspace_id=wid)
            assert summary["diff"]["summary"] == diff["summary"], (summary["diff"], diff["summary"])
            assert summary["diff"]["entries"] == [{"path": e["path"], "status": e["status"]} for e in diff["entries"]]
            assert (summary["diff"]["lines_added"], summary["diff"]["lines_removed"]) == (2, 1), summary["diff"]
            assert [(c["sequence"], c["exit_code"]) for c in summary["commands"]["entries"]] == [(1, 1), (2, 0)]
            assert summary["commands"]["total"] == 2 and summary["commands"]["failed"] == 1, summary["commands"]
            assert [p["paths"] for p in summary["patches"]] == [["/workspace/calc.sh"]], summary["patches"]
            assert [w["path"] for w in summary["file_writes"]] == ["/workspace/NOTES"], summary["file_writes"]
            assert summary["since_kind"] == "create" and summary["events_complete"], summary
            log("repro-fix: failing test fixed; summary matches workspace_diff")

            # Other task-shaped servers see the same workspace; inspect changes nothing.
            async with session("--mode", "inspect") as (s2, _):
                t2 = Tools(s2, (await s2.list_tools()).tools)
                again = await t2.ok("workspace_summary", workspace_id=wid)
                assert again["diff"] == summary["diff"] and again["commands"] == summary["commands"]
                try:
                    await s2.call_tool("workspace_exec", {"workspace_id": wid, "command": "true"})
                    raise AssertionError("inspect ran workspace_exec")
                except McpError as e:
                    assert "tool not found" in str(e), e
            async with session("--mode", "review-eval", "--profile", "workspace-core") as (s3, _):
                t3 = Tools(s3, (await s3.list_tools()).tools)
                out = os.path.join(seed, "exported-calc.sh")
                await t3.ok("workspace_export", workspace_id=wid, path="calc.sh", output_path=out)
                assert "$1 + $2" in open(out).read()
            summary = await t.ok("workspace_summary", workspace_id=wid)
            assert [x["output_path"] for x in summary["exports"]] == [out], summary["exports"]

            r = await t.ok("workspace_reset", workspace_id=wid)
            after = await t.ok("workspace_summary", workspace_id=wid)
            assert after["since_kind"] == "reset" and after["reset"]["snapshot_name"] == "baseline", after
            assert after["patches"] == [] and after["file_writes"] == [] and after["exports"] == [], after
            assert after["commands"]["total"] == 0 and after["diff"]["changed"] is False, after
            log("reset clears the summary")
        finally:
            await t.ok("workspace_delete", workspace_id=wid)


async def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "schemas"
    await {"schemas": schemas, "flow": flow}[which]()


asyncio.run(main())
