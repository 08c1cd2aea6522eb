"""Every profile lists exactly its tools (crates/pyro-mcp/tests/mcp-tool-surface.txt) with schemas and annotations."""

import asyncio
import sys

from common import PROFILES, log, stdio_session

READ_ONLY = {
    "vm_list_environments", "vm_status", "vm_network_info", "workspace_list", "workspace_status",
    "workspace_logs", "workspace_diff", "workspace_file_list", "workspace_file_read",
    "workspace_disk_list", "workspace_disk_read", "snapshot_list", "service_list",
    "service_status", "service_logs", "shell_read", "workspace_summary",
}
DESTRUCTIVE = {
    "workspace_delete", "workspace_reset", "workspace_file_write", "workspace_patch_apply",
    "workspace_exec", "workspace_stop", "vm_delete", "vm_stop", "vm_exec", "snapshot_delete",
    "service_stop", "shell_close",
}


def props(tool):
    return set(tool.inputSchema.get("properties", {}))


async def check(profile, expected):
    async with stdio_session(profile) as (s, _):
        tools = (await s.list_tools()).tools
    names = {t.name for t in tools}
    missing, extra = sorted(expected - names), sorted(names - expected)
    assert not missing and not extra, f"profile {profile}: missing {missing}, unexpected {extra}"
    assert len(tools) == len(expected), f"{profile}: duplicate tools"
    by = {t.name: t for t in tools}
    for t in tools:
        assert t.description and len(t.description) > 40, f"{t.name}: no useful description"
        assert t.outputSchema and t.outputSchema.get("type") == "object", f"{t.name}: no object outputSchema"
        assert t.inputSchema.get("type") == "object", t.name
        a = t.annotations
        assert a is not None and a.title, f"{t.name}: no annotations"
        if t.name in READ_ONLY:
            assert a.readOnlyHint is True, f"{t.name} should be read-only"
        if t.name in DESTRUCTIVE:
            assert a.readOnlyHint is False and a.destructiveHint is True, f"{t.name} should be destructive"
    if "workspace_create" in by:
        p = props(by["workspace_create"])
        full = profile == "workspace-full"
        assert ("network_policy" in p) == full and ("secrets" in p) == full, f"{profile}: {sorted(p)}"
        assert ("secret_env" in props(by["workspace_exec"])) == full
        d = by["workspace_create"].inputSchema["properties"]
        assert d["vcpu_count"]["default"] == 1 and d["mem_mib"]["default"] == 1024
        assert d["ttl_seconds"]["default"] == 600 and d["allow_host_compat"]["default"] is False
        assert by["workspace_create"].inputSchema["required"] == ["environment"]
        assert by["workspace_exec"].inputSchema["properties"]["timeout_seconds"]["default"] == 30
        assert by["workspace_file_read"].inputSchema["properties"]["max_bytes"]["default"] == 65536
        assert by["workspace_file_list"].inputSchema["properties"]["path"]["default"] == "/workspace"
        assert by["workspace_reset"].inputSchema["properties"]["snapshot"]["default"] == "baseline"
        if full:
            assert d["network_policy"]["default"] == "off"
    log(f"profile {profile}: {len(tools)} tools as expected")


async def main():
    failures = []
    for profile, expected in PROFILES.items():
        try:
            await check(profile, expected)
        except AssertionError as e:
            failures.append(str(e))
            log("FAIL", e)
    if failures:
        sys.exit(1)


asyncio.run(main())
