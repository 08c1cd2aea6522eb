//! The MCP tool surface pinned: per profile, every tool with its sorted parameter names; per
//! mode, the same plus each tool's annotations. A renamed tool or parameter, a profile or
//! mode change, fails `mcp_tool_surface_is_pinned`; if intended, rerun with
//! PYRO_UPDATE_SURFACE=1 and update CHANGELOG.md.

use pyro_mcp::{Mode, Profile, PyroMcp};
use rmcp::model::Tool;
use rmcp::ServiceExt;
use serde_json::Value;

fn engine() -> pyro::Pyro {
    pyro::Pyro::with_paths(pyro::Paths { home: "/nonexistent".into(), cache_dir: "/nonexistent".into() })
}

/// Every server a client can get: each profile, each mode.
fn servers() -> Vec<(String, PyroMcp)> {
    let pyro = engine();
    let mut v: Vec<(String, PyroMcp)> =
        Profile::ALL.into_iter().map(|p| (p.as_str().to_string(), PyroMcp::new(pyro.clone(), p))).collect();
    v.extend(Mode::ALL.into_iter().map(|m| (format!("mode {}", m.as_str()), PyroMcp::with_mode(pyro.clone(), m))));
    v
}

fn params(t: &Tool) -> String {
    let mut params: Vec<&String> =
        t.input_schema.get("properties").and_then(|p| p.as_object()).map(|p| p.keys().collect()).unwrap_or_default();
    params.sort();
    params.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
}

/// `read-only`, or `writes` with `destructive`/`idempotent`/`open-world` as set.
fn annotations(t: &Tool) -> String {
    let a = t.annotations.clone().unwrap_or_default();
    let mut out = vec![if a.read_only_hint == Some(true) { "read-only" } else { "writes" }];
    if a.read_only_hint != Some(true) && a.destructive_hint == Some(true) {
        out.push("destructive");
    }
    if a.idempotent_hint == Some(true) {
        out.push("idempotent");
    }
    if a.open_world_hint == Some(true) {
        out.push("open-world");
    }
    out.join(" ")
}

fn surface() -> String {
    let pyro = engine();
    let mut out = String::new();
    for profile in Profile::ALL {
        let server = PyroMcp::new(pyro.clone(), profile);
        let mut lines: Vec<String> = server
            .tools()
            .iter()
            .map(|t| format!("{} {}: {}", profile.as_str(), t.name, params(t)).trim_end().to_string())
            .collect();
        lines.sort();
        out.push_str(&format!("# {} ({} tools)\n", profile.as_str(), lines.len()));
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    for mode in Mode::ALL {
        let server = PyroMcp::with_mode(pyro.clone(), mode);
        let tools = server.tools();
        out.push_str(&format!("# mode {} ({} tools)\n", mode.as_str(), tools.len()));
        for t in &tools {
            let p = params(t);
            let p = if p.is_empty() { String::new() } else { format!(" {p}") };
            out.push_str(&format!("mode {} {}:{p} [{}]\n", mode.as_str(), t.name, annotations(t)));
        }
    }
    out
}

#[test]
fn mcp_tool_surface_is_pinned() {
    let actual = surface();
    let pinned_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp-tool-surface.txt");
    if std::env::var_os("PYRO_UPDATE_SURFACE").is_some() {
        std::fs::write(pinned_path, &actual).unwrap();
    }
    let pinned = std::fs::read_to_string(pinned_path).unwrap_or_default();
    assert_eq!(actual, pinned, "the MCP tool surface changed; if intended, rerun with PYRO_UPDATE_SURFACE=1");
}

#[test]
fn every_profile_lists_exactly_its_reference_tools() {
    for profile in Profile::ALL {
        let mut listed: Vec<String> =
            PyroMcp::new(engine(), profile).tools().iter().map(|t| t.name.to_string()).collect();
        listed.sort();
        let expected: Vec<String> = profile.tool_names().iter().map(|s| s.to_string()).collect();
        let missing: Vec<&String> = expected.iter().filter(|n| !listed.contains(n)).collect();
        assert!(missing.is_empty(), "profile {}: tools not implemented: {missing:?}", profile.as_str());
        assert_eq!(listed, expected, "profile {}", profile.as_str());
    }
}

#[test]
fn every_mode_lists_exactly_its_tools_with_its_own_descriptions() {
    for mode in Mode::ALL {
        let server = PyroMcp::with_mode(engine(), mode);
        let listed: Vec<String> = server.tools().iter().map(|t| t.name.to_string()).collect();
        let expected: Vec<String> = mode.tool_names().iter().map(|s| s.to_string()).collect();
        assert_eq!(listed, expected, "mode {}", mode.as_str());
        // Smaller than the profiles it fits in, and narrower: no host-compat switch.
        assert!(listed.len() < Profile::WorkspaceCore.tool_names().len() || mode == Mode::Inspect);
        let full = PyroMcp::new(engine(), Profile::WorkspaceFull).tools();
        let mut own = 0;
        for t in server.tools() {
            assert!(!t.input_schema["properties"].as_object().unwrap().contains_key("allow_host_compat"), "{}", t.name);
            let general = full.iter().find(|f| f.name == t.name).expect("a mode's tool is a real tool");
            own += (t.description != general.description) as usize;
        }
        assert!(
            own * 4 >= listed.len() * 3,
            "mode {}: only {own} of {} descriptions are the mode's own",
            mode.as_str(),
            listed.len()
        );
    }
}

/// Tools that change a workspace, a VM or the host (files exported), whatever their
/// annotations say: none may be in `inspect`.
const WRITES: &[&str] = &[
    "vm_run",
    "vm_create",
    "vm_start",
    "vm_exec",
    "vm_stop",
    "vm_delete",
    "vm_reap_expired",
    "workspace_create",
    "workspace_delete",
    "workspace_exec",
    "workspace_command_kill",
    "workspace_export",
    "workspace_file_write",
    "workspace_patch_apply",
    "workspace_sync_push",
    "workspace_reset",
    "workspace_update",
    "workspace_stop",
    "workspace_start",
    "workspace_pause",
    "workspace_resume",
    "workspace_fork",
    "workspace_disk_export",
    "snapshot_create",
    "snapshot_delete",
    "service_start",
    "service_stop",
    "shell_open",
    "shell_write",
    "shell_signal",
    "shell_close",
];

#[test]
fn inspect_exposes_only_read_only_tools() {
    let tools = PyroMcp::with_mode(engine(), Mode::Inspect).tools();
    assert!(!tools.is_empty());
    for t in &tools {
        let a = t.annotations.as_ref().unwrap_or_else(|| panic!("{} has no annotations", t.name));
        assert_eq!(a.read_only_hint, Some(true), "{} in inspect is not annotated read-only", t.name);
        assert!(!WRITES.contains(&t.name.as_ref()), "{} writes but is in inspect", t.name);
    }
    // Every tool the full profile marks as writing is in WRITES (so the list above is whole).
    for t in PyroMcp::new(engine(), Profile::WorkspaceFull).tools() {
        if t.annotations.as_ref().and_then(|a| a.read_only_hint) != Some(true) {
            assert!(WRITES.contains(&t.name.as_ref()), "{} writes: add it to WRITES", t.name);
        }
    }
}

#[test]
fn modes_and_profiles_combine_predictably() {
    assert!(Mode::Inspect.check_profile(Profile::WorkspaceFull).is_ok());
    let e = Mode::Inspect.check_profile(Profile::WorkspaceCore).unwrap_err();
    assert!(e.contains("workspace_disk_list") && e.contains("--profile workspace-full"), "{e}");
    assert!(Mode::ReproFix.check_profile(Profile::WorkspaceCore).is_ok());
    assert!(Mode::ReproFix.check_profile(Profile::VmRun).is_err());
    for mode in Mode::ALL {
        assert!(mode.check_profile(Profile::WorkspaceFull).is_ok(), "{}", mode.as_str());
        assert_eq!(Mode::parse(mode.as_str()), Ok(mode));
    }
    assert_eq!(
        Mode::parse("nope").unwrap_err(),
        "unknown MCP mode 'nope'; expected one of: cold-start, inspect, repro-fix, review-eval"
    );
}

/// The formats JSON Schema 2020-12 defines; and every keyword a schema may use (the
/// 2020-12 core, applicator, validation, meta-data and format vocabularies).
const KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$ref",
    "$defs",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$comment",
    "$vocabulary",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "prefixItems",
    "items",
    "contains",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "title",
    "description",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "examples",
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];

/// Walk a schema: every keyword standard, every `format` standard. Returns the problems.
fn check_schema(v: &Value, path: &str, problems: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, sub) in o {
                if !KEYWORDS.contains(&k.as_str()) {
                    problems.push(format!("{path}: non-standard keyword '{k}'"));
                }
                match k.as_str() {
                    "format" => {
                        let f = sub.as_str().unwrap_or("");
                        if !pyro_mcp::schema::STANDARD_FORMATS.contains(&f) {
                            problems.push(format!("{path}: non-standard format '{f}'"));
                        }
                    }
                    // Maps of name -> schema.
                    "properties" | "patternProperties" | "$defs" | "dependentSchemas" => {
                        for (name, s) in sub.as_object().into_iter().flatten() {
                            check_schema(s, &format!("{path}/{k}/{name}"), problems);
                        }
                    }
                    // Values that are not schemas.
                    "enum" | "const" | "default" | "examples" | "required" | "type" | "description" | "title" => {}
                    _ => check_schema(sub, &format!("{path}/{k}"), problems),
                }
            }
        }
        Value::Array(a) => {
            for (i, s) in a.iter().enumerate() {
                check_schema(s, &format!("{path}/{i}"), problems);
            }
        }
        _ => {}
    }
}

#[test]
fn every_schema_uses_only_standard_keywords_and_formats() {
    let mut problems = Vec::new();
    for (name, server) in servers() {
        for t in server.tools() {
            check_schema(&Value::Object((*t.input_schema).clone()), &format!("{name} {} input", t.name), &mut problems);
            let out = t.output_schema.as_ref().unwrap_or_else(|| panic!("{} has no outputSchema", t.name));
            check_schema(&Value::Object((**out).clone()), &format!("{name} {} output", t.name), &mut problems);
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    // The integer widths are kept as ranges.
    let core = PyroMcp::new(engine(), Profile::WorkspaceCore).tools();
    let create = core.iter().find(|t| t.name == "workspace_create").unwrap();
    let vcpu = &create.input_schema["properties"]["vcpu_count"];
    assert_eq!((vcpu["minimum"].as_u64(), vcpu["maximum"].as_u64()), (Some(0), Some(u32::MAX as u64)), "{vcpu}");
}

/// Lists twice over an in-process connection negotiated with `lifecycle`.
async fn list_twice(
    server: PyroMcp,
    lifecycle: rmcp::ClientLifecycleMode,
) -> (Option<rmcp::model::ProtocolVersion>, rmcp::model::ListToolsResult, rmcp::model::ListToolsResult) {
    use rmcp::ClientServiceExt;
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(async move {
        let running = server.serve(server_io).await.expect("server starts");
        let _ = running.waiting().await;
    });
    let client = ().serve_with_lifecycle(client_io, lifecycle).await.expect("client connects");
    let first = client.list_tools(None).await.expect("tools/list");
    let second = client.list_tools(None).await.expect("tools/list");
    let version = client.peer_info().map(|i| i.protocol_version.clone());
    client.cancel().await.ok();
    task.abort();
    (version, first, second)
}

#[tokio::test]
async fn tools_list_on_the_wire_is_sorted_and_cacheable() {
    use rmcp::model::{CacheScope, ProtocolVersion};
    for (name, server) in servers() {
        let expected: Vec<String> = server.tools().iter().map(|t| t.name.to_string()).collect();
        // 2026-07-28 (server/discover): cache hints.
        let discover = rmcp::ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] };
        let (version, first, second) = list_twice(server.clone(), discover).await;
        assert_eq!(version, Some(ProtocolVersion::V_2026_07_28), "{name}");
        let names: Vec<String> = first.tools.iter().map(|t| t.name.to_string()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "{name}: tools/list is not sorted");
        assert_eq!(names, expected, "{name}");
        // rmcp's client honours the hints: the second list comes from its cache, with the
        // time spent since taken off the TTL.
        assert_eq!(first.tools, second.tools, "{name}: two lists differ");
        assert!(second.ttl_ms.is_some_and(|t| t <= pyro_mcp::TOOLS_LIST_TTL_MS), "{name}");
        assert_eq!(first.ttl_ms, Some(pyro_mcp::TOOLS_LIST_TTL_MS), "{name}");
        assert_eq!(first.cache_scope, Some(CacheScope::Public), "{name}");
        // An older revision (initialize): the same sorted list, no fields it does not know.
        let (version, legacy, _) = list_twice(server, rmcp::ClientLifecycleMode::Initialize).await;
        assert_ne!(version, Some(ProtocolVersion::V_2026_07_28), "{name}");
        assert_eq!(legacy.tools, first.tools, "{name}");
        assert_eq!((legacy.ttl_ms, legacy.cache_scope), (None, None), "{name}");
    }
}
