//! MCP acceptance tests, driven by a client nobody here wrote: the official Python MCP SDK
//! (`mcp` 1.x) running the scripts in `tests/mcp/` against `pyro mcp serve` (real VMs).
//!
//! The client lives in a venv that `scripts/test.sh` creates at
//! `${XDG_CACHE_HOME:-$HOME/.cache}/pyro-ci/venv` (or `PYRO_MCP_PYTHON` names a python that
//! has `mcp` and `jsonschema`). Without it these tests skip loudly, unless
//! `PYRO_REQUIRE_MCP_CLIENT` is set (CI sets it), in which case they fail. The tasks test needs
//! the 2.x client (`scripts/mcp2-client-venv.sh`, or `PYRO_MCP2_PYTHON`), which can declare the
//! 2026-07-28 tasks extension.

mod common;

use common::TestHome;
use std::path::PathBuf;
use std::process::Command;

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PYRO_MCP_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let py = cache.join("pyro-ci/venv/bin/python");
    py.exists().then_some(py)
}

/// The python of the official MCP client 2.x (`scripts/mcp2-client-venv.sh`), which can declare
/// the 2026-07-28 tasks extension: `PYRO_MCP2_PYTHON`, or that script's venv.
fn python2() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PYRO_MCP2_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let py = cache.join("pyro-ci/venv-mcp2/bin/python");
    py.exists().then_some(py)
}

/// Run `tests/mcp/<script>` with the Python MCP client; panics with its output on failure.
fn run_script(script: &str, args: &[&str]) {
    let Some(py) = python() else {
        if std::env::var_os("PYRO_REQUIRE_MCP_CLIENT").is_some() {
            panic!("the Python MCP client venv is missing (run scripts/test.sh, or set PYRO_MCP_PYTHON)");
        }
        eprintln!("\n!!! SKIPPED {script}: no Python MCP client venv (scripts/test.sh creates it) !!!\n");
        return;
    };
    run_with(py, script, args);
}

/// Run `tests/mcp/<script>` with `python`; panics with its output on failure.
fn run_with(py: PathBuf, script: &str, args: &[&str]) {
    let home = TestHome::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/mcp");
    let out = Command::new(py)
        .arg(format!("{dir}/{script}"))
        .args(args)
        // Outside the repository's checkout, so the servers the script starts have no
        // project and workspaces created without seed_path start empty.
        .current_dir(home.path())
        .env("PYRO_BIN", common::pyro_bin())
        .env("PYRO_HOME", home.path())
        .output()
        .expect("python runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(out.status.success(), "{script} {args:?} failed ({}):\n{text}", out.status);
}

#[test]
fn tools_listed_per_profile_match_the_reference() {
    run_script("list_tools.py", &[]);
}

#[test]
fn workspace_flow_over_stdio_protocol_2025_06_18() {
    run_script("flow.py", &["stdio", "2025-06-18"]);
}

#[test]
fn workspace_flow_over_stdio_protocol_2025_11_25() {
    run_script("flow.py", &["stdio", "2025-11-25"]);
}

#[test]
fn workspace_flow_over_stdio_latest_protocol() {
    run_script("flow.py", &["stdio", "latest"]);
}

#[test]
fn workspace_flow_over_streamable_http_protocol_2025_06_18() {
    run_script("flow.py", &["http", "2025-06-18"]);
}

#[test]
fn workspace_flow_over_streamable_http_latest_protocol() {
    run_script("flow.py", &["http", "latest"]);
}

#[test]
fn cancelled_exec_ends_the_guest_command_and_status_is_not_blocked() {
    run_script("cancel.py", &[]);
}

#[test]
fn bad_input_is_an_error_and_the_server_keeps_serving() {
    run_script("bad_input.py", &[]);
}

#[test]
fn shell_and_service_tools_work_end_to_end() {
    run_script("sessions.py", &[]);
}

#[test]
fn pause_resume_fork_and_the_operators_idle_pause_default() {
    run_script("pause.py", &[]);
}

#[test]
fn a_client_vanishing_mid_call_leaves_nothing_running_and_the_workspace_usable() {
    run_script("disconnect.py", &[]);
}

#[test]
fn a_guest_never_gets_a_successful_answer_from_the_host_mcp_http_server() {
    run_script("guest_http.py", &[]);
}

#[test]
fn a_background_command_outlives_its_client_and_is_followed_from_another() {
    run_script("background.py", &[]);
}

#[test]
fn long_calls_are_tasks_for_clients_declaring_the_tasks_extension() {
    let Some(py) = python2() else {
        if std::env::var_os("PYRO_REQUIRE_MCP_CLIENT").is_some() {
            panic!(
                "the Python MCP client 2.x venv is missing (run scripts/mcp2-client-venv.sh, or set PYRO_MCP2_PYTHON)"
            );
        }
        eprintln!(
            "\n!!! SKIPPED tasks.py: no Python MCP client 2.x venv (scripts/mcp2-client-venv.sh creates it) !!!\n"
        );
        return;
    };
    run_with(py, "tasks.py", &[]);
}
