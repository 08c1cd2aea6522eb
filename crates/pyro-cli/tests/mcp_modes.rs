//! Modes, schemas and the summary over MCP, driven by clients nobody here wrote: the official
//! Python MCP SDK (`tests/mcp/modes.py`) and the official TypeScript MCP SDK
//! (`tests/mcp/ts_client.mjs`, the client inside MCP Inspector and Claude Code, which prints a
//! warning for every schema keyword or format ajv does not know).
//!
//! The Python venv is `scripts/mcp-client-venv.sh`'s (or `PYRO_MCP_PYTHON`); the TypeScript
//! SDK is `scripts/ts-mcp-client.sh`'s (or `PYRO_TS_MCP_MODULES`). Without them these tests
//! skip loudly, unless `PYRO_REQUIRE_MCP_CLIENT` is set (CI), in which case they fail.

mod common;

use common::TestHome;
use std::path::PathBuf;
use std::process::Command;

fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
}

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PYRO_MCP_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let py = cache_dir()?.join("pyro-ci/venv/bin/python");
    py.exists().then_some(py)
}

fn ts_modules() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PYRO_TS_MCP_MODULES") {
        return Some(PathBuf::from(p));
    }
    let m = cache_dir()?.join("pyro-ci/ts-mcp-client/node_modules");
    m.join("@modelcontextprotocol/sdk/package.json").exists().then_some(m)
}

fn skip(what: &str) {
    if std::env::var_os("PYRO_REQUIRE_MCP_CLIENT").is_some() {
        panic!("{what} is missing (scripts/mcp-client-venv.sh, scripts/ts-mcp-client.sh)");
    }
    eprintln!("\n!!! SKIPPED: no {what} (scripts/mcp-client-venv.sh, scripts/ts-mcp-client.sh) !!!\n");
}

fn run(mut cmd: Command, what: &str) {
    let home = TestHome::new();
    let out = cmd
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/mcp"))
        .env("PYRO_BIN", common::pyro_bin())
        .env("PYRO_HOME", home.path())
        .output()
        .expect("the client runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    home.assert_clean();
}

fn python_script(args: &[&str]) {
    let Some(py) = python() else { return skip("Python MCP client venv") };
    let mut c = Command::new(py);
    c.arg("modes.py").args(args);
    run(c, &format!("modes.py {args:?}"));
}

#[test]
fn every_surface_is_sorted_with_metaschema_valid_standard_schemas() {
    python_script(&["schemas"]);
}

#[test]
fn repro_fix_inspect_and_review_eval_share_a_workspace_and_its_summary() {
    python_script(&["flow"]);
}

#[test]
fn the_typescript_sdk_connects_to_every_profile_and_mode_without_a_warning() {
    let Some(modules) = ts_modules() else { return skip("TypeScript MCP SDK") };
    let surfaces: Vec<Vec<&str>> = ["vm-run", "workspace-core", "workspace-full"]
        .iter()
        .map(|p| vec!["--profile", p])
        .chain(["repro-fix", "inspect", "cold-start", "review-eval"].iter().map(|m| vec!["--mode", m]))
        .collect();
    for args in surfaces {
        let mut c = Command::new("node");
        c.arg("ts_client.mjs").args(&args).env("PYRO_TS_MCP_MODULES", &modules);
        run(c, &format!("ts_client.mjs {args:?}"));
    }
}
