//! Project-aware startup, driven by the official Python MCP client (`tests/mcp/project.py`):
//! `pyro mcp serve` started in a Git checkout full of junk (a unix socket, an unreadable file,
//! a 200 MB ignored build directory) seeds workspaces created without `seed_path` from the
//! files Git tracks; `--repo-url file://... --repo-ref` clones a bare repository; bad project
//! paths and repositories stop the server at start with the reason and a recovery hint.
//!
//! Needs the Python MCP client venv (`scripts/mcp-client-venv.sh`, or `PYRO_MCP_PYTHON`) and
//! the host's `git`; skips loudly without the venv unless `PYRO_REQUIRE_MCP_CLIENT` is set.

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

/// Run `tests/mcp/project.py <scenario>` with a fresh `PYRO_HOME`; afterwards nothing of that
/// home is left running.
fn run(scenario: &str) {
    let Some(py) = python() else {
        if std::env::var_os("PYRO_REQUIRE_MCP_CLIENT").is_some() {
            panic!("the Python MCP client venv is missing (run scripts/test.sh, or set PYRO_MCP_PYTHON)");
        }
        eprintln!("\n!!! SKIPPED project.py {scenario}: no Python MCP client venv !!!\n");
        return;
    };
    let home = TestHome::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/mcp/project.py");
    let out = Command::new(py)
        .arg(script)
        .arg(scenario)
        .current_dir(home.path())
        .env("PYRO_BIN", common::pyro_bin())
        .env("PYRO_HOME", home.path())
        .output()
        .expect("python runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(out.status.success(), "project.py {scenario} failed ({}):\n{text}", out.status);
    home.assert_clean();
}

#[test]
fn a_server_started_in_a_messy_checkout_seeds_only_the_projects_files() {
    run("checkout");
}

#[test]
fn a_repo_url_is_cloned_at_its_ref_and_seeds_workspaces() {
    run("repo_url");
}

#[test]
fn bad_project_paths_and_repositories_stop_the_server_with_a_hint() {
    run("errors");
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `pyro workspace create --seed-path` copies a directory as it is (a checkout's socket makes
/// it fail, its `.git` would be copied); `--project-path` opts into the project rules.
#[test]
fn workspace_create_seeds_a_checkout_by_git_rules_only_when_asked() {
    let home = TestHome::new();
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q"]);
    std::fs::write(r.join("tracked.txt"), "hello\n").unwrap();
    std::fs::write(r.join(".gitignore"), "out/\n").unwrap();
    git(r, &["add", "."]);
    git(r, &["commit", "-qm", "one"]);
    let head = git(r, &["rev-parse", "HEAD"]);
    std::fs::create_dir(r.join("out")).unwrap();
    std::fs::write(r.join("out/big.bin"), "ignored").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(r.join("dev.sock")).unwrap();

    let plain = home.run(&["workspace", "create", "debian:12", "--seed-path", r.to_str().unwrap(), "--json"]);
    assert!(!plain.status.success());
    let err = String::from_utf8_lossy(&plain.stdout).to_string() + &String::from_utf8_lossy(&plain.stderr);
    assert!(err.contains("dev.sock: it is a socket"), "{err}");
    let dangling = home.run(&["workspace", "create", "debian:12", "--project-include-untracked"]);
    assert!(!dangling.status.success());
    let both = home.run(&["workspace", "create", "debian:12", "--seed-path", "/tmp", "--project-path", "/tmp"]);
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"), "{both:?}");

    let out = home.run(&[
        "workspace",
        "create",
        "debian:12",
        "--mem-mib",
        "512",
        "--project-path",
        r.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seed = &info["workspace_seed"];
    assert_eq!(seed["origin_kind"], "git_checkout", "{seed}");
    assert_eq!(seed["origin_ref"], head.as_str(), "{seed}");
    assert_eq!(seed["entry_count"], 2, "only .gitignore and tracked.txt: {seed}");
    let id = info["workspace_id"].as_str().unwrap();
    let ls = home.run(&["workspace", "exec", id, "--", "ls", "-A", "/workspace"]);
    assert_eq!(String::from_utf8_lossy(&ls.stdout), ".gitignore\ntracked.txt\n");
    assert!(home.run(&["workspace", "delete", id]).status.success());
    home.assert_clean();
}
