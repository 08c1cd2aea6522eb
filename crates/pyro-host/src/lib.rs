//! `pyro host`: connect an agent client (Claude Code, Codex, OpenCode, or any client that
//! reads a generic `mcpServers` JSON file) to `pyro mcp serve`: print the exact config entry,
//! write it into the client's config file, check it (the command is pyro, the profile is
//! valid, the server starts and lists its tools) and repair what is wrong.
//!
//! Writes touch one entry only: JSON and JSONC files are edited by byte span (`json.rs`),
//! Codex's TOML with `toml_edit`, so comments, spacing, key order and other servers stay
//! byte for byte. Every write keeps a backup of the old file, is atomic and keeps its mode.

mod json;

use pyro_mcp::Profile;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What went wrong; the CLI maps `InvalidInput` to exit code 1 with the message as is.
#[derive(Debug)]
pub enum Error {
    /// Bad arguments or a config file pyro will not edit (it does not parse, a parent key is
    /// not an object): nothing was written.
    InvalidInput(String),
    /// Reading or writing a file failed.
    Io(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidInput(m) | Error::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// This crate's results.
pub type Result<T> = std::result::Result<T, Error>;

/// The agent clients pyro knows the config format of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Client {
    /// Claude Code: `mcpServers.NAME = {"type": "stdio", "command", "args", "env"}` in
    /// `~/.claude.json` (user scope) or `.mcp.json` (project scope).
    ClaudeCode,
    /// OpenAI Codex: `[mcp_servers.NAME]` with `command` and `args` in
    /// `$CODEX_HOME/config.toml` (default `~/.codex/config.toml`).
    Codex,
    /// OpenCode: `mcp.NAME = {"type": "local", "command": [...], "enabled": true}` in
    /// `~/.config/opencode/opencode.json` (user) or `opencode.json` (project).
    OpenCode,
    /// Any client reading `{"mcpServers": {NAME: {"command", "args"}}}` (Claude Desktop,
    /// Cursor, ...): needs `--config FILE`.
    Generic,
}

impl Client {
    /// Every client, in the order `--help` lists them.
    pub const ALL: [Client; 4] = [Client::ClaudeCode, Client::Codex, Client::OpenCode, Client::Generic];

    /// The name `pyro host ... CLIENT` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Client::ClaudeCode => "claude-code",
            Client::Codex => "codex",
            Client::OpenCode => "opencode",
            Client::Generic => "generic",
        }
    }

    /// Parses a client name; the error names every client.
    pub fn parse(name: &str) -> Result<Client> {
        Client::ALL.into_iter().find(|c| c.as_str() == name).ok_or_else(|| {
            Error::InvalidInput(format!(
                "unknown client '{name}'; expected one of: claude-code, codex, opencode, generic"
            ))
        })
    }

    /// The key path of the server table in the client's config.
    fn parent_key(self) -> &'static str {
        match self {
            Client::ClaudeCode | Client::Generic => "mcpServers",
            Client::Codex => "mcp_servers",
            Client::OpenCode => "mcp",
        }
    }
}

/// Which of a client's config files: the user's (all projects) or the current project's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The user's config in the home directory (default).
    #[default]
    User,
    /// The project's config in the current directory (`.mcp.json`, `opencode.json`,
    /// `.codex/config.toml`), meant to be committed.
    Project,
}

/// Which config file and entry an operation works on.
#[derive(Clone, Debug)]
pub struct Target {
    /// The client whose format the file has.
    pub client: Client,
    /// User or project config (ignored when `config` is given).
    pub scope: Scope,
    /// An explicit config file, overriding the client's default location.
    pub config: Option<PathBuf>,
    /// The server's name in the file (default `pyro`).
    pub name: String,
}

impl Target {
    /// The config file this target names. Default locations follow each client's docs:
    /// `$HOME/.claude.json` / `./.mcp.json`; `$CODEX_HOME/config.toml` (else
    /// `$HOME/.codex/config.toml`) / `./.codex/config.toml`;
    /// `$XDG_CONFIG_HOME/opencode/opencode.json` (else `$HOME/.config/...`) / `./opencode.json`.
    pub fn config_path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.config {
            return Ok(p.clone());
        }
        let home = || {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| Error::InvalidInput("HOME is not set; pass --config FILE".into()))
        };
        let cwd = || std::env::current_dir().map_err(|e| Error::Io(format!("current directory: {e}")));
        let env_dir = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
        Ok(match (self.client, self.scope) {
            (Client::ClaudeCode, Scope::User) => home()?.join(".claude.json"),
            (Client::ClaudeCode, Scope::Project) => cwd()?.join(".mcp.json"),
            (Client::Codex, Scope::User) => {
                env_dir("CODEX_HOME").map_or_else(|| home().map(|h| h.join(".codex")), Ok)?.join("config.toml")
            }
            (Client::Codex, Scope::Project) => cwd()?.join(".codex").join("config.toml"),
            (Client::OpenCode, Scope::User) => env_dir("XDG_CONFIG_HOME")
                .map_or_else(|| home().map(|h| h.join(".config")), Ok)?
                .join("opencode")
                .join("opencode.json"),
            (Client::OpenCode, Scope::Project) => cwd()?.join("opencode.json"),
            (Client::Generic, _) => {
                return Err(Error::InvalidInput(
                    "the generic client has no default config file; pass --config FILE".into(),
                ))
            }
        })
    }

    fn check_name(&self) -> Result<()> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "invalid server name '{}': use 1-64 letters, digits, '-' or '_'",
                self.name
            )))
        }
    }
}

/// The command a client runs: the pyro binary and `mcp serve` with its flags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServeCommand {
    /// Absolute path of the pyro binary.
    pub program: String,
    /// `mcp serve --profile P ...`.
    pub args: Vec<String>,
}

impl ServeCommand {
    /// `PROGRAM mcp serve --profile PROFILE EXTRA...`; `extra` are further `pyro mcp serve`
    /// flags passed through as given (checked when `doctor` starts the server).
    pub fn new(program: &Path, profile: Profile, extra: &[String]) -> Result<ServeCommand> {
        let program = absolute(program)?;
        let mut args = vec!["mcp".into(), "serve".into(), "--profile".into(), profile.as_str().into()];
        for a in extra {
            if a == "--profile" || a.starts_with("--profile=") {
                return Err(Error::InvalidInput("pass the profile with --profile, not after `--`".into()));
            }
            if a == "--http" || a.starts_with("--http=") {
                return Err(Error::InvalidInput(
                    "--http cannot be used here: clients start `pyro mcp serve` on stdio".into(),
                ));
            }
        }
        args.extend(extra.iter().cloned());
        Ok(ServeCommand { program, args })
    }

    /// The running pyro binary, for entries that should point at this pyro.
    pub fn current_exe() -> Result<PathBuf> {
        std::env::current_exe().map_err(|e| Error::Io(format!("cannot find the running pyro binary: {e}")))
    }
}

fn absolute(p: &Path) -> Result<String> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| Error::Io(format!("current directory: {e}")))?.join(p)
    };
    let p = std::fs::canonicalize(&p).unwrap_or(p);
    p.into_os_string()
        .into_string()
        .map_err(|p| Error::InvalidInput(format!("the pyro path {p:?} is not valid UTF-8, which config files need")))
}

/// The entry as a JSON value in the client's format (for Codex, the TOML table's keys).
pub fn entry_value(client: Client, cmd: &ServeCommand) -> Value {
    match client {
        Client::ClaudeCode => json!({"type": "stdio", "command": cmd.program, "args": cmd.args, "env": {}}),
        Client::Generic | Client::Codex => json!({"command": cmd.program, "args": cmd.args}),
        Client::OpenCode => {
            let mut command = vec![cmd.program.clone()];
            command.extend(cmd.args.iter().cloned());
            json!({"type": "local", "command": command, "enabled": true})
        }
    }
}

/// `pyro host print-config`: a complete config file holding just the entry, in the client's
/// format, ready to paste or merge.
pub fn print_config(target: &Target, cmd: &ServeCommand) -> Result<String> {
    target.check_name()?;
    let entry = entry_value(target.client, cmd);
    Ok(match target.client {
        Client::Codex => {
            let mut doc = toml_edit::DocumentMut::new();
            set_toml_entry(&mut doc, &target.name, &entry)?;
            doc.to_string()
        }
        Client::OpenCode => {
            let v = json!({"$schema": "https://opencode.ai/config.json", "mcp": {target.name.clone(): entry}});
            format!("{}\n", serde_json::to_string_pretty(&v).expect("a Value serialises"))
        }
        Client::ClaudeCode | Client::Generic => {
            let v = json!({"mcpServers": {target.name.clone(): entry}});
            format!("{}\n", serde_json::to_string_pretty(&v).expect("a Value serialises"))
        }
    })
}

/// What `connect` or `repair` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct WriteReport {
    /// The client.
    pub client: Client,
    /// The config file.
    pub config_path: PathBuf,
    /// The server's name in it.
    pub name: String,
    /// The file did not exist and was created.
    pub created: bool,
    /// The file changed (false: the entry was already as wanted; nothing was written).
    pub changed: bool,
    /// The copy of the old file, when one was made.
    pub backup: Option<PathBuf>,
    /// The entry now in the file.
    pub entry: Value,
    /// What `repair` fixed (empty for `connect`).
    pub fixed: Vec<String>,
}

/// The file's text, or `None` when it does not exist.
fn read_config(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::InvalidInput(format!("{} is not UTF-8 text; pyro will not edit it", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io(format!("cannot read {}: {e}", path.display()))),
    }
}

/// `pyro host connect`: writes the entry (replacing an existing one of that name).
pub fn connect(target: &Target, cmd: &ServeCommand) -> Result<WriteReport> {
    target.check_name()?;
    let entry = entry_value(target.client, cmd);
    write_entry(target, entry, Vec::new())
}

/// Sets the entry to `entry` in the target file, keeping every other byte; backup, atomic
/// write, same mode. Nothing is written when the entry already equals `entry`.
fn write_entry(target: &Target, entry: Value, fixed: Vec<String>) -> Result<WriteReport> {
    let given = target.config_path()?;
    // A symlinked config (dotfile managers) is edited where it points, not replaced.
    let path = std::fs::canonicalize(&given).unwrap_or(given);
    let old = read_config(&path)?;
    let text = old.clone().unwrap_or_default();
    if let Some(existing) = read_entry(target.client, &text, &target.name).map_err(|e| invalid(&path, e))? {
        if existing == entry {
            return Ok(WriteReport {
                client: target.client,
                config_path: path,
                name: target.name.clone(),
                created: false,
                changed: false,
                backup: None,
                entry,
                fixed,
            });
        }
    }
    let new = match target.client {
        Client::Codex => {
            let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| invalid(&path, format!("{e}")))?;
            set_toml_entry(&mut doc, &target.name, &entry).map_err(|e| invalid(&path, e.to_string()))?;
            // toml_edit writes `\n` even where it read `\r\n`: put a CRLF file's endings back.
            let crlf = text.matches("\r\n").count();
            match (crlf, text.matches('\n').count()) {
                (0, _) => doc.to_string(),
                (c, n) if c == n => doc.to_string().replace("\r\n", "\n").replace('\n', "\r\n"),
                _ => return Err(invalid(&path, "mixed CRLF and LF line endings, which the TOML editor would change")),
            }
        }
        c => {
            let text = if old.is_none() && c == Client::OpenCode {
                "{\n  \"$schema\": \"https://opencode.ai/config.json\"\n}\n".to_string()
            } else {
                text.clone()
            };
            json::set(&text, &[c.parent_key(), &target.name], &entry).map_err(|e| invalid(&path, e))?
        }
    };
    // What we wrote must read back as exactly the entry we meant.
    let back = read_entry(target.client, &new, &target.name)
        .map_err(|e| Error::Io(format!("internal: edited config does not parse: {e}")))?;
    if back.as_ref() != Some(&entry) {
        return Err(Error::Io(
            "internal: the edited config does not hold the intended entry; nothing was written".into(),
        ));
    }
    let backup = match &old {
        Some(_) => Some(backup(&path)?),
        None => None,
    };
    let mode =
        std::fs::metadata(&path).ok().map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("cannot create {}: {e}", dir.display())))?;
    }
    pyro_sys::write_atomic(&path, new.as_bytes())
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
    // write_atomic's temp file is 0600: keep an existing file's mode; a new file in the home
    // directory stays private, a new project file is world-readable like the rest of the repo.
    let mode = mode.unwrap_or(if target.scope == Scope::Project && target.config.is_none() { 0o644 } else { 0o600 });
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| Error::Io(format!("cannot set the mode of {}: {e}", path.display())))?;
    Ok(WriteReport {
        client: target.client,
        config_path: path,
        name: target.name.clone(),
        created: old.is_none(),
        changed: true,
        backup,
        entry,
        fixed,
    })
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!(
        "{}: {e}; nothing was written (fix the file by hand or pass another --config)",
        path.display()
    ))
}

/// Copies the file to `FILE.pyro-backup-SECONDS[-N]` with its mode.
fn backup(path: &Path) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = format!("{}.pyro-backup-{secs}", path.display());
    let mut dest = PathBuf::from(&base);
    let mut n = 1;
    while dest.exists() {
        dest = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::copy(path, &dest)
        .map_err(|e| Error::Io(format!("cannot back up {} to {}: {e}", path.display(), dest.display())))?;
    Ok(dest)
}

/// The named entry as a JSON value (Codex's table converted), `None` when absent.
fn read_entry(client: Client, text: &str, name: &str) -> std::result::Result<Option<Value>, String> {
    match client {
        Client::Codex => {
            let doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
            let Some(servers) = doc.get("mcp_servers") else { return Ok(None) };
            let Some(servers) = servers.as_table_like() else { return Err("mcp_servers is not a table".into()) };
            Ok(servers.get(name).map(toml_to_json))
        }
        c => {
            if text.trim_start_matches('\u{feff}').trim().is_empty() {
                return Ok(None);
            }
            let root = json::parse(text)?;
            Ok(root.get(c.parent_key()).and_then(|p| p.get(name)).map(json::Node::to_value))
        }
    }
}

fn toml_to_json(item: &toml_edit::Item) -> Value {
    use toml_edit::Value as T;
    fn val(v: &T) -> Value {
        match v {
            T::String(s) => json!(s.value()),
            T::Integer(i) => json!(i.value()),
            T::Float(f) => json!(f.value()),
            T::Boolean(b) => json!(b.value()),
            T::Datetime(d) => json!(d.value().to_string()),
            T::Array(a) => Value::Array(a.iter().map(val).collect()),
            T::InlineTable(t) => Value::Object(t.iter().map(|(k, v)| (k.to_string(), val(v))).collect()),
        }
    }
    match item {
        toml_edit::Item::Value(v) => val(v),
        toml_edit::Item::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.to_string(), toml_to_json(v))).collect()),
        toml_edit::Item::ArrayOfTables(a) => {
            Value::Array(a.iter().map(|t| toml_to_json(&toml_edit::Item::Table(t.clone()))).collect())
        }
        toml_edit::Item::None => Value::Null,
    }
}

fn json_to_toml(v: &Value) -> toml_edit::Value {
    match v {
        Value::String(s) => s.as_str().into(),
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(0.0).into(),
        },
        Value::Array(a) => toml_edit::Value::Array(a.iter().map(json_to_toml).collect()),
        Value::Object(m) => {
            let mut t = toml_edit::InlineTable::new();
            for (k, v) in m {
                t.insert(k, json_to_toml(v));
            }
            toml_edit::Value::InlineTable(t)
        }
        Value::Null => "".into(),
    }
}

/// Makes `[mcp_servers.NAME]` hold exactly `entry`'s keys: keys that stay are updated in
/// place (their comments kept), others added or removed; the rest of the document untouched.
fn set_toml_entry(doc: &mut toml_edit::DocumentMut, name: &str, entry: &Value) -> Result<()> {
    let Value::Object(want) = entry else { unreachable!("entries are objects") };
    let root = doc.as_table_mut();
    if !root.contains_key("mcp_servers") {
        let mut t = toml_edit::Table::new();
        // `[mcp_servers]` itself is not written: only `[mcp_servers.NAME]`.
        t.set_implicit(true);
        root.insert("mcp_servers", toml_edit::Item::Table(t));
    }
    let servers = root["mcp_servers"]
        .as_table_like_mut()
        .ok_or_else(|| Error::InvalidInput("mcp_servers is not a table; fix or remove it first".into()))?;
    let fresh = !matches!(servers.get(name), Some(i) if i.is_table_like());
    if fresh {
        servers.remove(name);
        servers.insert(name, toml_edit::Item::Table(toml_edit::Table::new()));
    }
    let server = servers.get_mut(name).and_then(|i| i.as_table_like_mut()).expect("inserted above");
    let stale: Vec<String> = server.iter().map(|(k, _)| k.to_string()).filter(|k| !want.contains_key(k)).collect();
    for k in stale {
        server.remove(&k);
    }
    for (k, v) in want {
        let same = server.get(k).map(toml_to_json).as_ref() == Some(v);
        if !same {
            match server.get_mut(k).and_then(|i| i.as_value_mut()) {
                // Keep the key's place and its comments; only the value changes.
                Some(slot) => {
                    let decor = slot.decor().clone();
                    *slot = json_to_toml(v);
                    *slot.decor_mut() = decor;
                }
                None => {
                    server.insert(k, toml_edit::Item::Value(json_to_toml(v)));
                }
            }
        }
    }
    Ok(())
}

/// One check of `doctor`.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// `config_file`, `entry`, `command`, `profile` or `server`.
    pub name: &'static str,
    /// `ok`, `fail` or `skipped` (an earlier check failed).
    pub status: &'static str,
    /// What was found, or what is wrong and how to fix it.
    pub detail: String,
}

/// `pyro host doctor`'s payload.
#[derive(Clone, Debug, Serialize)]
pub struct DoctorReport {
    /// The client.
    pub client: Client,
    /// The config file checked.
    pub config_path: PathBuf,
    /// The server's name in it.
    pub name: String,
    /// Every check passed.
    pub ok: bool,
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// The entry's command and args, when it has them.
    pub command: Option<ServeCommand>,
    /// How many tools the started server listed.
    pub tool_count: Option<usize>,
}

/// The entry read back into command + args, with what is wrong with its shape.
struct Parsed {
    command: Option<ServeCommand>,
    env: Vec<(String, String)>,
    problems: Vec<String>,
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect()
}

fn parse_entry(client: Client, v: &Value) -> Parsed {
    let mut problems = Vec::new();
    let mut env = Vec::new();
    let Some(obj) = v.as_object() else {
        return Parsed { command: None, env, problems: vec![format!("the entry is {} , not an object", kind_of(v))] };
    };
    let env_key = if client == Client::OpenCode { "environment" } else { "env" };
    match obj.get(env_key) {
        None => {}
        Some(Value::Object(m)) => env.extend(m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))),
        Some(other) => problems.push(format!("\"{env_key}\" is {}, not an object", kind_of(other))),
    }
    let (program, args) = match client {
        Client::OpenCode => {
            match obj.get("type").and_then(Value::as_str) {
                Some("local") => {}
                _ => problems.push("\"type\" must be \"local\"".into()),
            }
            if obj.get("enabled") == Some(&json!(false)) {
                problems.push("\"enabled\" is false".into());
            }
            match strings(obj.get("command")) {
                Some(c) if !c.is_empty() => (Some(c[0].clone()), Some(c[1..].to_vec())),
                _ => {
                    problems.push("\"command\" must be a non-empty array of strings".into());
                    (None, None)
                }
            }
        }
        _ => {
            if client == Client::ClaudeCode {
                match obj.get("type") {
                    None => {}
                    Some(t) if t == "stdio" => {}
                    Some(_) => problems.push("\"type\" must be \"stdio\"".into()),
                }
            }
            if client == Client::Codex && obj.get("enabled") == Some(&json!(false)) {
                problems.push("\"enabled\" is false".into());
            }
            let program = obj.get("command").and_then(Value::as_str).map(str::to_string);
            if program.is_none() {
                problems.push("\"command\" must be a string".into());
            }
            let args = match obj.get("args") {
                None => Some(Vec::new()),
                a => strings(a),
            };
            if args.is_none() {
                problems.push("\"args\" must be an array of strings".into());
            }
            (program, args)
        }
    };
    let command = match (program, args) {
        (Some(program), Some(args)) => Some(ServeCommand { program, args }),
        _ => None,
    };
    Parsed { command, env, problems }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `program` exists, is an executable file and answers `--version` as pyro.
fn check_program(program: &str) -> std::result::Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = Path::new(program);
    if !path.is_absolute() {
        return Err(format!("{program} is not an absolute path (clients may start it with another PATH)"));
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{program}: {e}"))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{program} is not an executable file"));
    }
    let out = std::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{program} cannot be run: {e}"))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !version.starts_with("pyro ") {
        return Err(format!("{program} is not pyro (`--version` printed {version:?})"));
    }
    Ok(version)
}

/// The value of `--profile` in `args` (`Ok(None)` when absent: serve's default applies).
fn profile_of(args: &[String]) -> std::result::Result<Option<Profile>, String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = if a == "--profile" {
            it.next().ok_or("--profile has no value")?.as_str()
        } else if let Some(v) = a.strip_prefix("--profile=") {
            v
        } else {
            continue;
        };
        return Profile::parse(v).map(Some);
    }
    Ok(None)
}

/// What is wrong with the args, other than the profile.
fn args_problem(args: &[String]) -> Option<String> {
    if args.len() < 2 || args[0] != "mcp" || args[1] != "serve" {
        return Some(format!("args must start with \"mcp\", \"serve\" (found {args:?})"));
    }
    if args.iter().any(|a| a == "--http" || a.starts_with("--http=")) {
        return Some("args have --http: clients start pyro on stdio".into());
    }
    None
}

/// `pyro host doctor`: checks the entry, the command, the profile, then starts the server
/// and lists its tools. A failed check is a report, not an error; errors are only for a
/// target that cannot be named (bad client, no HOME).
pub async fn doctor(target: &Target) -> Result<DoctorReport> {
    target.check_name()?;
    let path = target.config_path()?;
    let mut report = DoctorReport {
        client: target.client,
        config_path: path.clone(),
        name: target.name.clone(),
        ok: false,
        checks: Vec::new(),
        command: None,
        tool_count: None,
    };
    let names = ["config_file", "entry", "command", "profile", "server"];
    let finish = |mut report: DoctorReport, failed_at: usize, detail: String| {
        report.checks.push(Check { name: names[failed_at], status: "fail", detail });
        for n in &names[failed_at + 1..] {
            report.checks.push(Check { name: n, status: "skipped", detail: "an earlier check failed".into() });
        }
        Ok(report)
    };
    let pass = |report: &mut DoctorReport, i: usize, detail: String| {
        report.checks.push(Check { name: names[i], status: "ok", detail })
    };
    let hint = format!("run `pyro host repair {}`", target.client.as_str());
    let text = match read_config(&path) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return finish(
                report,
                0,
                format!("{} does not exist; run `pyro host connect {}`", path.display(), target.client.as_str()),
            )
        }
        Err(e) => return finish(report, 0, e.to_string()),
    };
    let entry = match read_entry(target.client, &text, &target.name) {
        Ok(e) => e,
        Err(e) => return finish(report, 0, format!("{} does not parse: {e}", path.display())),
    };
    pass(&mut report, 0, format!("{} parses", path.display()));
    let Some(entry) = entry else {
        return finish(report, 1, format!("no \"{}\" entry under {}; {hint}", target.name, target.client.parent_key()));
    };
    let parsed = parse_entry(target.client, &entry);
    if !parsed.problems.is_empty() {
        return finish(report, 1, format!("{}; {hint}", parsed.problems.join("; ")));
    }
    let cmd = parsed.command.expect("no problems means a command");
    report.command = Some(cmd.clone());
    if let Some(p) = args_problem(&cmd.args) {
        return finish(report, 1, format!("{p}; {hint}"));
    }
    pass(&mut report, 1, format!("\"{}\" is well-formed", target.name));
    match check_program(&cmd.program) {
        Ok(version) => pass(&mut report, 2, format!("{} is {version}", cmd.program)),
        Err(e) => return finish(report, 2, format!("{e}; {hint}")),
    }
    let profile = match profile_of(&cmd.args) {
        Ok(p) => p,
        Err(e) => return finish(report, 3, format!("{e}; {hint}")),
    };
    let shown = profile.unwrap_or(Profile::WorkspaceCore);
    pass(&mut report, 3, format!("{}{}", shown.as_str(), if profile.is_none() { " (serve's default)" } else { "" }));
    match list_tools(&cmd, &parsed.env).await {
        Ok(n) => {
            report.tool_count = Some(n);
            pass(&mut report, 4, format!("the server started and listed {n} tools"));
        }
        Err(e) => return finish(report, 4, e),
    }
    report.ok = true;
    Ok(report)
}

/// Starts the entry's command as the client would, does the MCP handshake and `tools/list`.
async fn list_tools(cmd: &ServeCommand, env: &[(String, String)]) -> std::result::Result<usize, String> {
    use rmcp::ServiceExt;
    let mut command = tokio::process::Command::new(&cmd.program);
    command.args(&cmd.args).envs(env.iter().map(|(k, v)| (k, v)));
    let (transport, stderr) = rmcp::transport::TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cmd.program))?;
    let session = async {
        let client = ().serve(transport).await.map_err(|e| format!("MCP initialize failed: {e}"))?;
        let tools = client.list_all_tools().await.map_err(|e| format!("tools/list failed: {e}"));
        let _ = client.cancel().await;
        tools.map(|t| t.len())
    };
    match tokio::time::timeout(Duration::from_secs(60), session).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => {
            // The server's own words say why it did not start (a bad flag, a bad PYRO_HOME).
            let mut why = String::new();
            if let Some(mut s) = stderr {
                use tokio::io::AsyncReadExt;
                let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut why)).await;
            }
            let why = why.trim();
            Err(if why.is_empty() { e } else { format!("{e}; the server said: {why}") })
        }
        Err(_) => Err("the server did not answer initialize + tools/list within 60 s".into()),
    }
}

/// `pyro host repair`: fixes what `doctor` checks without starting the server: a missing or
/// malformed entry, a command that is not an executable pyro (pointed at `program`), args
/// that do not run `mcp serve` on stdio, a bad or (with `profile`) different profile. Keys
/// of the entry pyro does not own (`env`, `timeout`, ...) and the rest of the file stay.
pub fn repair(target: &Target, program: &Path, profile: Option<Profile>) -> Result<WriteReport> {
    target.check_name()?;
    let path = target.config_path()?;
    let text = read_config(&path)?.unwrap_or_default();
    let existing = read_entry(target.client, &text, &target.name).map_err(|e| invalid(&path, e))?;
    let mut fixed = Vec::new();
    let Some(existing) = existing else {
        fixed.push(format!("added the missing \"{}\" entry", target.name));
        let cmd = ServeCommand::new(program, profile.unwrap_or(Profile::WorkspaceCore), &[])?;
        return write_entry(target, entry_value(target.client, &cmd), fixed);
    };
    let parsed = parse_entry(target.client, &existing);
    fixed.extend(parsed.problems.iter().cloned());
    let old = parsed.command.clone();
    let program_ok = old.as_ref().is_some_and(|c| check_program(&c.program).is_ok());
    let program = if program_ok {
        old.as_ref().expect("checked").program.clone()
    } else {
        if let Some(c) = &old {
            fixed.push(format!("command {} is not an executable pyro", c.program));
        }
        absolute(program)?
    };
    let mut args = match &old {
        Some(c) if args_problem(&c.args).is_none() => c.args.clone(),
        Some(c) => {
            fixed.push(args_problem(&c.args).expect("checked"));
            vec!["mcp".into(), "serve".into()]
        }
        None => vec!["mcp".into(), "serve".into()],
    };
    let current = profile_of(&args);
    let want = match (profile, &current) {
        (Some(p), _) => Some(p),
        (None, Ok(Some(_))) => None,
        (None, Ok(None)) => Some(Profile::WorkspaceCore),
        (None, Err(e)) => {
            fixed.push(e.clone());
            Some(Profile::WorkspaceCore)
        }
    };
    if let Some(p) = want {
        if current != Ok(Some(p)) {
            if current.is_ok() && profile.is_some() {
                fixed.push(format!("profile set to {}", p.as_str()));
            }
            set_profile(&mut args, p);
        }
    }
    let cmd = ServeCommand { program, args };
    // Merge onto the existing object so keys pyro does not own survive the repair.
    let mut entry = existing.as_object().cloned().unwrap_or_default();
    let Value::Object(ours) = entry_value(target.client, &cmd) else { unreachable!("entries are objects") };
    for (k, v) in ours {
        let keep_env = k == "env" && entry.get("env").is_some_and(Value::is_object);
        if !keep_env {
            entry.insert(k, v);
        }
    }
    write_entry(target, Value::Object(entry), fixed)
}

/// Replaces every `--profile` (and `--profile=`) in `args` by one `--profile P` after
/// `mcp serve`.
fn set_profile(args: &mut Vec<String>, p: Profile) {
    let mut out: Vec<String> = Vec::new();
    let mut it = args.iter().cloned();
    while let Some(a) = it.next() {
        if a == "--profile" {
            it.next();
        } else if !a.starts_with("--profile=") {
            out.push(a);
        }
    }
    out.splice(2..2, ["--profile".to_string(), p.as_str().to_string()]);
    *args = out;
}

impl DoctorReport {
    /// The client's name as `pyro host` takes it.
    pub fn client_name(&self) -> &'static str {
        self.client.as_str()
    }
}

impl WriteReport {
    /// The client's name as `pyro host` takes it.
    pub fn client_name(&self) -> &'static str {
        self.client.as_str()
    }
}
