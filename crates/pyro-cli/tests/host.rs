//! `pyro host connect|print-config|doctor|repair`: each client's config written into a file
//! that already holds other content (comments, odd spacing, other servers, unicode, CRLF),
//! the rest of the file byte-identical, repairs of broken entries, and the real clients
//! (Claude Code, Codex, OpenCode from npm: `scripts/host-clients.sh`) listing the server.
//!
//! No guest is needed: `doctor` starts `pyro mcp serve` and lists its tools, which needs no VM.
//! Every test runs with HOME (and XDG/CODEX dirs) pointing into a temp dir, never at the real
//! home's configs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn pyro_bin() -> PathBuf {
    std::fs::canonicalize(env!("CARGO_BIN_EXE_pyro")).expect("pyro binary")
}

/// A temp HOME; `pyro` and the clients run with it.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Home { dir: tempfile::Builder::new().prefix("pyro-host-").tempdir_in("/tmp").expect("tempdir") }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn env(&self, c: &mut Command) {
        c.env("HOME", self.path())
            .env("PYRO_HOME", self.path().join("pyro"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("CODEX_HOME")
            .current_dir(self.path());
    }
    fn pyro(&self, args: &[&str]) -> Output {
        let mut c = Command::new(pyro_bin());
        self.env(&mut c);
        c.args(args).output().expect("pyro runs")
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.pyro(args);
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "pyro {args:?} failed:\n{text}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }
    fn write(&self, rel: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

/// The one contiguous region where `old` and `new` differ: (removed, inserted).
fn splice(old: &str, new: &str) -> (String, String) {
    let (a, b) = (old.as_bytes(), new.as_bytes());
    let mut p = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    while !old.is_char_boundary(p) || !new.is_char_boundary(p) {
        p -= 1;
    }
    let max_s = a.len().min(b.len()) - p;
    let mut s = a.iter().rev().zip(b.iter().rev()).take(max_s).take_while(|(x, y)| x == y).count();
    while !old.is_char_boundary(a.len() - s) || !new.is_char_boundary(b.len() - s) {
        s -= 1;
    }
    (old[p..a.len() - s].to_string(), new[p..b.len() - s].to_string())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The backups `pyro host` made of `p`.
fn backups(p: &Path) -> Vec<PathBuf> {
    let name = format!("{}.pyro-backup-", p.file_name().unwrap().to_str().unwrap());
    let mut v: Vec<PathBuf> = std::fs::read_dir(p.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|q| q.file_name().unwrap().to_str().unwrap().starts_with(&name))
        .collect();
    v.sort();
    v
}

/// Connecting changed exactly one region: the entry inserted (or replacing `old_entry`),
/// the backup equals the old file, the mode is kept.
fn assert_connected(path: &Path, before: &str, old_entry: &str, mode_before: u32) -> String {
    let after = std::fs::read_to_string(path).unwrap();
    let (removed, inserted) = splice(before, &after);
    assert_eq!(removed, old_entry, "only the entry may change; file now:\n{after}");
    assert!(inserted.contains(pyro_bin().to_str().unwrap()), "inserted: {inserted}");
    assert!(!inserted.contains("other"), "inserted text touches another server: {inserted}");
    let b = backups(path);
    assert!(!b.is_empty(), "no backup of {}", path.display());
    assert_eq!(std::fs::read_to_string(b.last().unwrap()).unwrap(), before, "the backup is the old file");
    assert_eq!(mode(path), mode_before, "mode kept");
    after
}

fn doctor_ok(home: &Home, args: &[&str], profile: pyro_mcp::Profile) {
    let tools = profile.tool_names().len();
    let mut a = vec!["host", "doctor"];
    a.extend_from_slice(args);
    a.push("--json");
    let r = home.json(&a);
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["tool_count"], tools, "{r:#}");
    assert_eq!(r["checks"].as_array().unwrap().len(), 5);
}

fn doctor_fails(home: &Home, args: &[&str], check: &str, needle: &str) {
    let mut a = vec!["host", "doctor"];
    a.extend_from_slice(args);
    a.push("--json");
    let o = home.pyro(&a);
    assert_eq!(o.status.code(), Some(1), "doctor must fail");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["ok"], false);
    let c = r["checks"].as_array().unwrap().iter().find(|c| c["status"] == "fail").expect("a failed check");
    assert_eq!(c["name"], check, "{r:#}");
    assert!(c["detail"].as_str().unwrap().contains(needle), "{r:#}");
}

/// The real clients' bin dir (scripts/host-clients.sh), or None (then the real-client
/// checks skip loudly, unless PYRO_REQUIRE_HOST_CLIENTS is set).
fn clients_bin() -> Option<PathBuf> {
    let dir = match std::env::var_os("PYRO_HOST_CLIENTS_BIN") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?
            .join("pyro-ci/host-clients/node_modules/.bin"),
    };
    if dir.join("claude").exists() && dir.join("codex").exists() && dir.join("opencode").exists() {
        return Some(dir);
    }
    if std::env::var_os("PYRO_REQUIRE_HOST_CLIENTS").is_some() {
        panic!("the npm agent clients are missing (run scripts/host-clients.sh, or set PYRO_HOST_CLIENTS_BIN)");
    }
    eprintln!("\n!!! SKIPPED real-client check: no clients from scripts/host-clients.sh !!!\n");
    None
}

/// Runs a real client with the temp HOME; returns its output (stdout + stderr).
fn client(home: &Home, bin: &str, args: &[&str]) -> Option<String> {
    let dir = clients_bin()?;
    let mut c = Command::new(dir.join(bin));
    home.env(&mut c);
    // Offline and quiet: no update checks, no telemetry.
    c.env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .env("NO_COLOR", "1")
        .env("PATH", format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default()))
        .stdin(std::process::Stdio::null());
    let o = c.args(args).output().expect("client runs");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{bin} {args:?} failed:\n{text}");
    Some(text)
}

const CLAUDE_JSON: &str = r#"{
  "numStartups": 7,
  "projects": {
    "/home/ünïcode/proj": { "mcpServers": {}, "allowedTools": [] }
  },
  "mcpServers": {
    "other":   { "type": "stdio", "command": "/bin/cat",   "args": [ ] }
  },
  "tipsHistory": { "✓": 1 }
}
"#;

#[test]
fn claude_code_connect_keeps_the_rest_and_the_real_client_connects() {
    let home = Home::new();
    let cfg = home.write(".claude.json", CLAUDE_JSON, 0o600);
    let out = home.ok(&["host", "connect", "claude-code", "--profile", "vm-run"]);
    assert!(out.contains("updated") && out.contains("backup:"), "{out}");
    let after = assert_connected(&cfg, CLAUDE_JSON, "", 0o600);
    let v: serde_json::Value = serde_json::from_str(&after).expect("still strict JSON");
    assert_eq!(v["mcpServers"]["pyro"]["type"], "stdio");
    assert_eq!(v["mcpServers"]["pyro"]["args"], serde_json::json!(["mcp", "serve", "--profile", "vm-run"]));
    doctor_ok(&home, &["claude-code"], pyro_mcp::Profile::VmRun);
    // Connecting again with the same entry writes nothing and makes no new backup.
    let again = home.json(&["host", "connect", "claude-code", "--profile", "vm-run", "--json"]);
    assert_eq!(again["changed"], false);
    assert_eq!(backups(&cfg).len(), 1);
    if let Some(list) = client(&home, "claude", &["mcp", "list"]) {
        let line = list.lines().find(|l| l.starts_with("pyro:")).unwrap_or_else(|| panic!("pyro not listed:\n{list}"));
        assert!(line.contains("Connected") && line.contains(pyro_bin().to_str().unwrap()), "{list}");
        let get = client(&home, "claude", &["mcp", "get", "pyro"]).unwrap();
        assert!(get.contains("Args: mcp serve --profile vm-run"), "{get}");
    }
}

#[test]
fn claude_code_project_scope_writes_mcp_json() {
    let home = Home::new();
    home.ok(&["host", "connect", "claude-code", "--scope", "project"]);
    let p = home.path().join(".mcp.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v["mcpServers"]["pyro"]["command"], pyro_bin().to_str().unwrap());
    assert_eq!(mode(&p), 0o644, "a project file is shared");
    assert!(!home.path().join(".claude.json").exists(), "user config untouched");
    doctor_ok(&home, &["claude-code", "--scope", "project"], pyro_mcp::Profile::WorkspaceCore);
}

const CODEX_TOML: &str = "# my codex config\r\nmodel = \"o3\"   # trailing comment\r\n\r\n[mcp_servers.other]\r\ncommand = \"/bin/cat\"\r\nargs = []\r\n\r\n[profiles.\"ü\"]\r\nmodel   =   'gpt'\r\n";

#[test]
fn codex_connect_keeps_the_rest_and_the_real_client_lists_it() {
    let home = Home::new();
    let cfg = home.write(".codex/config.toml", CODEX_TOML, 0o640);
    home.ok(&["host", "connect", "codex", "--profile", "workspace-full"]);
    let after = assert_connected(&cfg, CODEX_TOML, "", 0o640);
    assert!(after.contains("[mcp_servers.pyro]"), "{after}");
    doctor_ok(&home, &["codex"], pyro_mcp::Profile::WorkspaceFull);
    if let Some(list) = client(&home, "codex", &["mcp", "list"]) {
        let line = list.lines().find(|l| l.starts_with("pyro ")).unwrap_or_else(|| panic!("pyro not listed:\n{list}"));
        assert!(line.contains("enabled") && line.contains("mcp serve --profile workspace-full"), "{list}");
        assert!(list.lines().any(|l| l.starts_with("other ")), "{list}");
    }
}

const OPENCODE_JSONC: &str = r#"{
	"$schema": "https://opencode.ai/config.json",
	// my servers
	"mcp": {
		"other": {"type": "local", "command": ["/bin/cat"], "enabled": false}, /* off */
	},
	"theme": "ünï",
}
"#;

#[test]
fn opencode_connect_keeps_the_rest_and_the_real_client_connects() {
    let home = Home::new();
    let cfg = home.write(".config/opencode/opencode.json", OPENCODE_JSONC, 0o644);
    home.ok(&["host", "connect", "opencode"]);
    let after = assert_connected(&cfg, OPENCODE_JSONC, "", 0o644);
    assert!(after.contains("\t\t\"pyro\": {\n\t\t\t\"command\": ["), "tabs kept:\n{after}");
    doctor_ok(&home, &["opencode"], pyro_mcp::Profile::WorkspaceCore);
    if let Some(list) = client(&home, "opencode", &["mcp", "list"]) {
        let line = list.lines().find(|l| l.contains(" pyro ")).unwrap_or_else(|| panic!("pyro not listed:\n{list}"));
        assert!(line.contains("connected"), "{list}");
    }
}

const GENERIC_JSON: &str =
    "{\r\n\t\"mcpServers\" :{\r\n\t\t\"other\":{\"command\":\"/bin/cat\"}\r\n\t} ,\r\n\t\"x\": \"\\u00e9\"\r\n}";

#[test]
fn generic_connect_keeps_crlf_and_needs_a_config_file() {
    let home = Home::new();
    let o = home.pyro(&["host", "connect", "generic"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("pass --config FILE"));
    let cfg = home.write("clients/mcp.json", GENERIC_JSON, 0o600);
    let c = cfg.to_str().unwrap();
    home.ok(&["host", "connect", "generic", "--config", c, "--", "--idle-pause-seconds", "300"]);
    let after = assert_connected(&cfg, GENERIC_JSON, "", 0o600);
    assert!(!after.replace("\r\n", "").contains('\n'), "CRLF kept:\n{after:?}");
    let v: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        v["mcpServers"]["pyro"]["args"],
        serde_json::json!(["mcp", "serve", "--profile", "workspace-core", "--idle-pause-seconds", "300"])
    );
    doctor_ok(&home, &["generic", "--config", c], pyro_mcp::Profile::WorkspaceCore);
}

#[test]
fn print_config_output_parses_and_doctor_accepts_it() {
    let home = Home::new();
    for (client, file) in
        [("claude-code", "a.json"), ("codex", "a.toml"), ("opencode", "b.json"), ("generic", "c.json")]
    {
        let text = home.ok(&["host", "print-config", client, "--profile", "vm-run"]);
        if client != "codex" {
            let v: serde_json::Value = serde_json::from_str(&text).expect("print-config prints JSON");
            let key = if client == "opencode" { "mcp" } else { "mcpServers" };
            assert!(v[key]["pyro"].is_object(), "{text}");
        } else {
            assert!(text.starts_with("[mcp_servers.pyro]\n"), "{text}");
        }
        let p = home.write(file, &text, 0o600);
        doctor_ok(&home, &[client, "--config", p.to_str().unwrap()], pyro_mcp::Profile::VmRun);
    }
    // The Codex snippet is what the real Codex reads.
    let text = home.ok(&["host", "print-config", "codex"]);
    home.write(".codex/config.toml", &text, 0o600);
    if let Some(get) = client(&home, "codex", &["mcp", "get", "pyro"]) {
        assert!(get.contains(&format!("command: {}", pyro_bin().display())), "{get}");
    }
}

/// Breaks the entry of a connected file in `how`, checks doctor names the `check`, then
/// repairs it: only the entry changes, doctor passes.
fn break_and_repair(home: &Home, args: &[&str], cfg: &Path, broken_entry: &str, check: &str, needle: &str) {
    let text = std::fs::read_to_string(cfg).unwrap();
    let (start, end) = entry_span(&text);
    let broken = format!("{}{}{}", &text[..start], broken_entry, &text[end..]);
    std::fs::write(cfg, &broken).unwrap();
    doctor_fails(home, args, check, needle);
    let mut a = vec!["host", "repair"];
    a.extend_from_slice(args);
    a.push("--json");
    let r = home.json(&a);
    assert_eq!(r["changed"], true, "{r:#}");
    assert!(!r["fixed"].as_array().unwrap().is_empty(), "{r:#}");
    let after = std::fs::read_to_string(cfg).unwrap();
    let (removed, _) = splice(&broken, &after);
    assert!(broken_entry.contains(removed.trim()), "repair touched more than the entry:\n{removed}");
    assert_eq!(&after[..start], &text[..start], "bytes before the entry");
    assert_eq!(std::fs::read_to_string(backups(cfg).last().unwrap()).unwrap(), broken, "backup of the broken file");
    doctor_ok(home, args, pyro_mcp::Profile::WorkspaceCore);
}

/// The byte span of the `pyro` entry's value (JSON: `"pyro": {...}`; TOML: the table body).
fn entry_span(text: &str) -> (usize, usize) {
    if let Some(i) = text.find("[mcp_servers.pyro]") {
        let body = i + "[mcp_servers.pyro]".len();
        let end = text[body..].find("\n[").map_or(text.len(), |j| body + j + 1);
        return (body, end);
    }
    let i = text.find("\"pyro\"").unwrap();
    let open = i + text[i..].find('{').unwrap();
    let mut depth = 0;
    for (j, ch) in text[open..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return (open, open + j + 1);
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced entry")
}

#[test]
fn repair_restores_broken_claude_code_entries() {
    let home = Home::new();
    let cfg = home.write(".claude.json", CLAUDE_JSON, 0o600);
    home.ok(&["host", "connect", "claude-code"]);
    let args = ["claude-code"];
    // Wrong command; the user's own env key survives the repair.
    break_and_repair(
        &home,
        &args,
        &cfg,
        r#"{"type": "stdio", "command": "/nonexistent/pyro", "args": ["mcp", "serve"], "env": {"PYRO_X": "1"}}"#,
        "command",
        "/nonexistent/pyro",
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    assert_eq!(v["mcpServers"]["pyro"]["env"]["PYRO_X"], "1");
    assert_eq!(v["mcpServers"]["other"]["command"], "/bin/cat");
    // A command that exists but is not pyro.
    break_and_repair(&home, &args, &cfg, r#"{"command": "/bin/cat", "args": ["mcp", "serve"]}"#, "command", "not pyro");
    // Missing field, wrong type.
    break_and_repair(
        &home,
        &args,
        &cfg,
        r#"{"type": "stdio", "args": ["mcp", "serve"]}"#,
        "entry",
        "\"command\" must be a string",
    );
    let bin = pyro_bin().display().to_string();
    break_and_repair(
        &home,
        &args,
        &cfg,
        &format!(r#"{{"command": "{bin}", "args": "mcp serve"}}"#),
        "entry",
        "\"args\" must be an array",
    );
    // A bad profile.
    break_and_repair(
        &home,
        &args,
        &cfg,
        &format!(r#"{{"command": "{bin}", "args": ["mcp", "serve", "--profile", "everything"]}}"#),
        "profile",
        "unknown MCP profile 'everything'",
    );
    // The whole entry deleted: repair adds it back.
    let before = std::fs::read_to_string(&cfg).unwrap();
    let (s, e) = entry_span(&before);
    let key = before[..s].rfind(",").unwrap();
    std::fs::write(&cfg, format!("{}{}", &before[..key], &before[e..])).unwrap();
    doctor_fails(&home, &args, "entry", "no \"pyro\" entry");
    home.ok(&["host", "repair", "claude-code"]);
    doctor_ok(&home, &args, pyro_mcp::Profile::WorkspaceCore);
}

#[test]
fn repair_restores_broken_codex_and_opencode_entries() {
    let home = Home::new();
    let codex = home.write(".codex/config.toml", CODEX_TOML, 0o600);
    home.ok(&["host", "connect", "codex"]);
    // Keys pyro does not own stay, with their comments.
    break_and_repair(
        &home,
        &["codex"],
        &codex,
        "\r\ncommand = \"/nonexistent/pyro\" # old path\r\nargs = [\"mcp\", \"serve\"]\r\nstartup_timeout_sec = 30\r\n",
        "command",
        "/nonexistent",
    );
    let after = std::fs::read_to_string(&codex).unwrap();
    assert!(after.contains("startup_timeout_sec = 30") && after.contains("# old path"), "{after}");
    let bin = pyro_bin().display().to_string();
    break_and_repair(
        &home,
        &["codex"],
        &codex,
        &format!("\r\ncommand = \"{bin}\"\r\nargs = 3\r\n"),
        "entry",
        "\"args\" must be an array",
    );

    let oc = home.write(".config/opencode/opencode.json", OPENCODE_JSONC, 0o644);
    home.ok(&["host", "connect", "opencode"]);
    break_and_repair(
        &home,
        &["opencode"],
        &oc,
        r#"{"type": "remote", "command": ["/nonexistent/pyro", "mcp", "serve"]}"#,
        "entry",
        "\"type\" must be \"local\"",
    );
    break_and_repair(
        &home,
        &["opencode"],
        &oc,
        &format!(
            r#"{{"type": "local", "command": ["{bin}", "mcp", "serve", "--profile=bad"], "enabled": false, "environment": {{"A": "b"}}}}"#
        ),
        "entry",
        "\"enabled\" is false",
    );
    let after = std::fs::read_to_string(&oc).unwrap();
    assert!(
        after.contains("\"A\": \"b\"") && after.contains("\"--profile\",") && !after.contains("--profile=bad"),
        "{after}"
    );
    if let Some(list) = client(&home, "opencode", &["mcp", "list"]) {
        assert!(list.lines().any(|l| l.contains(" pyro ") && l.contains("connected")), "{list}");
    }
}

#[test]
fn a_file_pyro_cannot_edit_is_left_alone() {
    let home = Home::new();
    let bad = "{\n  \"mcpServers\": {\n    \"other\": {\"command\": \"/bin/cat\"\n}\n";
    let cfg = home.write(".claude.json", bad, 0o600);
    for verb in ["connect", "repair"] {
        let o = home.pyro(&["host", verb, "claude-code"]);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(".claude.json") && err.contains("line") && err.contains("nothing was written"), "{err}");
    }
    doctor_fails(&home, &["claude-code"], "config_file", "does not parse");
    let wrong_type = home.write("g.json", "{\"mcpServers\": [1, 2]}", 0o600);
    let o = home.pyro(&["host", "connect", "generic", "--config", wrong_type.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"mcpServers\" is not a JSON object"));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), bad);
    assert_eq!(std::fs::read_to_string(&wrong_type).unwrap(), "{\"mcpServers\": [1, 2]}");
    assert!(backups(&cfg).is_empty() && backups(&wrong_type).is_empty());
    // Flags that cannot work for a stdio client are refused before anything is written.
    let o = home.pyro(&["host", "connect", "codex", "--", "--http", "127.0.0.1:1"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--http cannot be used"));
    assert!(!home.path().join(".codex").exists());
    let o = home.pyro(&["host", "connect", "codex", "--name", "bad name"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid server name"));
}

#[test]
fn a_symlinked_config_is_edited_where_it_points() {
    let home = Home::new();
    let real = home.write("dotfiles/claude.json", CLAUDE_JSON, 0o600);
    std::os::unix::fs::symlink(&real, home.path().join(".claude.json")).unwrap();
    home.ok(&["host", "connect", "claude-code"]);
    assert!(std::fs::symlink_metadata(home.path().join(".claude.json")).unwrap().file_type().is_symlink());
    assert_connected(&real, CLAUDE_JSON, "", 0o600);
}
