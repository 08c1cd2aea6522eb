//! Tool parameters: names and defaults are a compatibility contract (pinned by
//! crates/pyro-mcp/tests/mcp-tool-surface.txt). Each struct is both the
//! serde target of a call's `arguments` and the source of the tool's `inputSchema` (schemars
//! reads the serde defaults, so every default shows up in the schema).

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Arguments that never fail to deserialize: a wrong or missing argument becomes an error the
/// tool reports as an `isError` result (the model can read it and retry), instead of a JSON-RPC
/// protocol error. The schema is `T`'s.
pub struct Args<T>(pub Result<T, String>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Args<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(Args(serde_json::from_value(value).map_err(|e| format!("invalid arguments: {e}"))))
    }
}

impl<T: JsonSchema> JsonSchema for Args<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(g)
    }
}

// Every default comes from `pyro::defaults` (shared with the engine and the CLI); serde
// needs a function per default.
fn vcpu_default() -> u32 {
    pyro::defaults::VCPU_COUNT
}
fn mem_default() -> u32 {
    pyro::defaults::MEM_MIB
}
fn ttl_default() -> u64 {
    pyro::defaults::TTL_SECONDS
}
fn timeout_default() -> u64 {
    pyro::defaults::TIMEOUT_SECONDS
}
fn workspace_path() -> String {
    pyro::workspace::WORKSPACE_PATH.to_string()
}
fn max_bytes_default() -> u64 {
    pyro::defaults::READ_MAX_BYTES
}
fn network_default() -> bool {
    pyro::defaults::NETWORK
}
fn network_policy_default() -> String {
    pyro::defaults::NETWORK_POLICY.into()
}
fn reset_snapshot_default() -> String {
    pyro::defaults::RESET_SNAPSHOT.into()
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmRunParams {
    /// Environment name: `debian:12`, `debian:12-base` or `debian:12-build`.
    pub environment: String,
    /// Shell command, run with `/bin/sh -lc`.
    pub command: String,
    /// Virtual CPUs, 1..8.
    #[serde(default = "vcpu_default")]
    pub vcpu_count: u32,
    /// Guest memory in MiB, 256..32768.
    #[serde(default = "mem_default")]
    pub mem_mib: u32,
    /// Seconds before the command is killed (exit code 124).
    #[serde(default = "timeout_default")]
    pub timeout_seconds: u64,
    /// Seconds the VM may live, 60..3600.
    #[serde(default = "ttl_default")]
    pub ttl_seconds: u64,
    /// Give the guest outbound network access.
    #[serde(default = "network_default")]
    pub network: bool,
    /// Allow running on the host without isolation when no VM backend works; refused unless the
    /// server was started with `pyro mcp serve --allow-host-compat`.
    #[serde(default)]
    pub allow_host_compat: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCreateParams {
    /// Environment name: `debian:12`, `debian:12-base` or `debian:12-build`.
    pub environment: String,
    /// Virtual CPUs, 1..8.
    #[serde(default = "vcpu_default")]
    pub vcpu_count: u32,
    /// Guest memory in MiB, 256..32768.
    #[serde(default = "mem_default")]
    pub mem_mib: u32,
    /// Seconds the VM may live, 60..3600.
    #[serde(default = "ttl_default")]
    pub ttl_seconds: u64,
    /// Give the guest outbound network access.
    #[serde(default = "network_default")]
    pub network: bool,
    /// Allow running on the host without isolation when no VM backend works; refused unless the
    /// server was started with `pyro mcp serve --allow-host-compat`.
    #[serde(default)]
    pub allow_host_compat: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmIdParams {
    /// The VM id returned by `vm_create`.
    pub vm_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmExecParams {
    /// The VM id returned by `vm_create` (and booted by `vm_start`).
    pub vm_id: String,
    /// Shell command, run with `/bin/sh -lc`.
    pub command: String,
    /// Seconds before the command is killed (exit code 124).
    #[serde(default = "timeout_default")]
    pub timeout_seconds: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceCreateCoreParams {
    /// Environment name: `debian:12`, `debian:12-base` or `debian:12-build`.
    pub environment: String,
    /// Virtual CPUs, 1..8.
    #[serde(default = "vcpu_default")]
    pub vcpu_count: u32,
    /// Guest memory in MiB, 256..32768.
    #[serde(default = "mem_default")]
    pub mem_mib: u32,
    /// Seconds until the workspace expires (it is then stopped, its disk kept), 60..3600.
    #[serde(default = "ttl_default")]
    pub ttl_seconds: u64,
    /// Allow running on the host without isolation when no VM backend works; refused unless the
    /// server was started with `pyro mcp serve --allow-host-compat`.
    #[serde(default)]
    pub allow_host_compat: bool,
    /// Host directory or .tar/.tar.gz/.tgz archive (on the server's machine) copied into `/workspace`.
    /// Absent: the server's project (the files of its Git checkout or repository), if it has one; else empty.
    #[serde(default)]
    pub seed_path: Option<String>,
    /// Human-readable name (trimmed, at most 120 characters).
    #[serde(default)]
    pub name: Option<String>,
    /// Labels: key matching `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` to a one-line value.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceCreateFullParams {
    /// Environment name: `debian:12`, `debian:12-base` or `debian:12-build`.
    pub environment: String,
    /// Virtual CPUs, 1..8.
    #[serde(default = "vcpu_default")]
    pub vcpu_count: u32,
    /// Guest memory in MiB, 256..32768.
    #[serde(default = "mem_default")]
    pub mem_mib: u32,
    /// Seconds until the workspace expires (it is then stopped, its disk kept), 60..3600.
    #[serde(default = "ttl_default")]
    pub ttl_seconds: u64,
    /// `off`, `egress` or `egress+published-ports`.
    #[serde(default = "network_policy_default")]
    pub network_policy: String,
    /// Allow running on the host without isolation when no VM backend works; refused unless the
    /// server was started with `pyro mcp serve --allow-host-compat`.
    #[serde(default)]
    pub allow_host_compat: bool,
    /// Host directory or .tar/.tar.gz/.tgz archive (on the server's machine) copied into `/workspace`.
    /// Absent: the server's project (the files of its Git checkout or repository), if it has one; else empty.
    #[serde(default)]
    pub seed_path: Option<String>,
    /// Secrets: `{"name", "value"}` or `{"name", "file_path"}`; values are redacted from every output.
    #[serde(default)]
    pub secrets: Option<Vec<pyro::workspace::secrets::SecretSpec>>,
    /// Human-readable name (trimmed, at most 120 characters).
    #[serde(default)]
    pub name: Option<String>,
    /// Labels: key matching `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` to a one-line value.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Pause the workspace after this many seconds without a call (1..86400; 0: never); the
    /// next call resumes it. Absent: the server's default (off unless the operator set one).
    #[serde(default)]
    pub idle_pause_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceIdParams {
    /// The workspace id returned by `workspace_create` (12 hex characters).
    pub workspace_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceUpdateParams {
    /// The workspace id.
    pub workspace_id: String,
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// Remove the name.
    #[serde(default)]
    pub clear_name: bool,
    /// Labels to add or overwrite.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Label keys to remove.
    #[serde(default)]
    pub clear_labels: Option<Vec<String>>,
    /// Pause the workspace after this many seconds without a call (1..86400; 0 turns it
    /// off); a running workspace applies it at once, counting from now.
    #[serde(default)]
    pub idle_pause_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceForkParams {
    /// The workspace id to fork (running, paused or stopped).
    pub workspace_id: String,
    /// How many workspaces to make, 1..8.
    #[serde(default = "fork_count_default")]
    pub count: u32,
    /// Names of the new workspaces, in order (at most `count`).
    #[serde(default)]
    pub names: Option<Vec<String>>,
}

fn fork_count_default() -> u32 {
    1
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceExecCoreParams {
    /// The workspace id.
    pub workspace_id: String,
    /// Shell command, run with `/bin/sh -lc` in `/workspace`.
    pub command: String,
    /// Seconds before the command's whole process group is killed (exit code 124); default
    /// 30, or 3600 with `background`.
    #[serde(default)]
    #[schemars(range(min = 1, max = 86400), extend("default" = 30))]
    pub timeout_seconds: Option<u64>,
    /// Start the command and answer at once with its `command_id`; it runs on after this call
    /// (and this client) is gone. Follow it with workspace_command_status, _read, _wait, _kill.
    #[serde(default)]
    pub background: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceExecFullParams {
    /// The workspace id.
    pub workspace_id: String,
    /// Shell command, run with `/bin/sh -lc` in `/workspace`.
    pub command: String,
    /// Seconds before the command's whole process group is killed (exit code 124); default
    /// 30, or 3600 with `background`.
    #[serde(default)]
    #[schemars(range(min = 1, max = 86400), extend("default" = 30))]
    pub timeout_seconds: Option<u64>,
    /// Start the command and answer at once with its `command_id`; it runs on after this call
    /// (and this client) is gone. Follow it with workspace_command_status, _read, _wait, _kill.
    #[serde(default)]
    pub background: bool,
    /// Map of workspace secret name to environment variable name, for this command only.
    #[serde(default)]
    pub secret_env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncPushParams {
    /// The workspace id.
    pub workspace_id: String,
    /// Host directory or archive on the server's machine.
    pub source_path: String,
    /// Guest directory under `/workspace` to extract into.
    #[serde(default = "workspace_path")]
    pub dest: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// The workspace id.
    pub workspace_id: String,
    /// Guest path under `/workspace` (absolute or relative to it).
    pub path: String,
    /// Host path on the server's machine; must not exist yet.
    pub output_path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathListParams {
    /// The workspace id.
    pub workspace_id: String,
    /// Guest directory under `/workspace`.
    #[serde(default = "workspace_path")]
    pub path: String,
    /// List the whole subtree.
    #[serde(default)]
    pub recursive: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathReadParams {
    /// The workspace id.
    pub workspace_id: String,
    /// Guest file path under `/workspace`.
    pub path: String,
    /// Most bytes of content to return.
    #[serde(default = "max_bytes_default")]
    pub max_bytes: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileWriteParams {
    /// The workspace id.
    pub workspace_id: String,
    /// Guest file path under `/workspace`; parent directories are created.
    pub path: String,
    /// UTF-8 content, at most 1 MiB.
    pub text: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchParams {
    /// The workspace id.
    pub workspace_id: String,
    /// Unified diff (`git diff` output works), paths relative to `/workspace`, at most 1 MiB.
    pub patch: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskExportParams {
    /// The workspace id (the workspace must be stopped).
    pub workspace_id: String,
    /// Host path on the server's machine for the raw ext4 image; must not exist yet.
    pub output_path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {
    /// The workspace id.
    pub workspace_id: String,
    /// Snapshot name matching `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    pub snapshot_name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetParams {
    /// The workspace id.
    pub workspace_id: String,
    /// Snapshot to restore `/workspace` from.
    #[serde(default = "reset_snapshot_default")]
    pub snapshot: String,
}

fn cols_default() -> u16 {
    pyro::defaults::SHELL_COLS
}
fn rows_default() -> u16 {
    pyro::defaults::SHELL_ROWS
}
fn max_chars_default() -> u64 {
    pyro::defaults::SHELL_MAX_CHARS
}
fn yes() -> bool {
    true
}
fn signal_default() -> String {
    pyro::defaults::SHELL_SIGNAL.into()
}
fn ready_timeout_default() -> u64 {
    pyro::defaults::READY_TIMEOUT_SECONDS
}
fn ready_interval_default() -> u64 {
    pyro::defaults::READY_INTERVAL_MS
}
fn tail_default() -> u64 {
    pyro::defaults::TAIL_LINES
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellOpenParams {
    /// The workspace id.
    pub workspace_id: String,
    /// Working directory under `/workspace`.
    #[serde(default = "workspace_path")]
    pub cwd: String,
    /// Terminal width in columns, 1..=1000.
    #[serde(default = "cols_default")]
    pub cols: u16,
    /// Terminal height in rows, 1..=500.
    #[serde(default = "rows_default")]
    pub rows: u16,
    /// Map of workspace secret name to environment variable name, exported in the shell.
    #[serde(default)]
    pub secret_env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellIdParams {
    /// The workspace id.
    pub workspace_id: String,
    /// The shell id returned by `shell_open`.
    pub shell_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellReadParams {
    /// The workspace id.
    pub workspace_id: String,
    /// The shell id returned by `shell_open`.
    pub shell_id: String,
    /// Character offset to read from; pass the previous `next_cursor` to continue.
    #[serde(default)]
    pub cursor: u64,
    /// Most characters to return.
    #[serde(default = "max_chars_default")]
    pub max_chars: u64,
    /// Render the screen as plain text (cursor movement and colours resolved).
    #[serde(default)]
    pub plain: bool,
    /// Return only once the output has been quiet this long (1..10000 ms).
    #[serde(default)]
    pub wait_for_idle_ms: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellWriteParams {
    /// The workspace id.
    pub workspace_id: String,
    /// The shell id returned by `shell_open`.
    pub shell_id: String,
    /// Text to type into the shell.
    pub input: String,
    /// Press Enter after the input.
    #[serde(default = "yes")]
    pub append_newline: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellSignalParams {
    /// The workspace id.
    pub workspace_id: String,
    /// The shell id returned by `shell_open`.
    pub shell_id: String,
    /// `HUP`, `INT`, `QUIT`, `TERM` or `KILL`, sent to the shell's foreground process group.
    #[serde(default = "signal_default")]
    pub signal_name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceStartParams {
    /// The workspace id.
    pub workspace_id: String,
    /// Service name matching `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    pub service_name: String,
    /// Shell command that runs the service (`sh -lc`).
    pub command: String,
    /// Working directory under `/workspace`.
    #[serde(default = "workspace_path")]
    pub cwd: String,
    /// Ready when this guest path exists.
    #[serde(default)]
    pub ready_file: Option<String>,
    /// Ready when `HOST:PORT` in the guest accepts TCP.
    #[serde(default)]
    pub ready_tcp: Option<String>,
    /// Ready when this `http://` URL (from inside the guest) answers 200-399.
    #[serde(default)]
    pub ready_http: Option<String>,
    /// Ready when this command exits 0.
    #[serde(default)]
    pub ready_command: Option<String>,
    /// Seconds to wait for readiness.
    #[serde(default = "ready_timeout_default")]
    pub ready_timeout_seconds: u64,
    /// Milliseconds between readiness checks.
    #[serde(default = "ready_interval_default")]
    pub ready_interval_ms: u64,
    /// Map of workspace secret name to environment variable name for the service.
    #[serde(default)]
    pub secret_env: Option<BTreeMap<String, String>>,
    /// Ports to publish on host 127.0.0.1: `{"guest_port": N, "host_port": M or null}`.
    #[serde(default)]
    pub published_ports: Option<Vec<pyro::workspace::PublishedPortSpec>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceNameParams {
    /// The workspace id.
    pub workspace_id: String,
    /// The service name given to `service_start`.
    pub service_name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceLogsParams {
    /// The workspace id.
    pub workspace_id: String,
    /// The service name given to `service_start`.
    pub service_name: String,
    /// Last lines of each stream to return.
    #[serde(default = "tail_default")]
    pub tail_lines: u64,
    /// Return everything kept instead of the tail.
    #[serde(default)]
    pub all: bool,
}
