//! Every default value of the SDK options, CLI flags and MCP tool parameters, defined once.
//!
//! The option constructors of the engine ([`CreateVmOptions::new`](crate::CreateVmOptions::new),
//! [`CreateWorkspaceOptions::new`](crate::workspace::CreateWorkspaceOptions::new), ...), the
//! `clap` flags of `pyro` (`default_value_t`) and the serde defaults of the MCP parameters
//! (which also become the `default` of each tool's `inputSchema`) all read these constants,
//! so `pyro run --help`, the MCP schema and an SDK call without options agree.

/// Virtual CPUs of a VM or workspace (`vcpu_count`).
pub const VCPU_COUNT: u32 = 1;
/// Guest memory in MiB (`mem_mib`).
pub const MEM_MIB: u32 = 1024;
/// Time to live in seconds (`ttl_seconds`): a VM is deleted, a workspace stopped, once it passes.
pub const TTL_SECONDS: u64 = 600;
/// Seconds a command may run before it is killed (`timeout_seconds` of run and exec).
pub const TIMEOUT_SECONDS: u64 = 30;
/// Whether an ephemeral VM gets outbound network access (`network` of `vm_run`/`pyro run`).
pub const NETWORK: bool = false;
/// Network policy of a new workspace (`network_policy`): no network.
pub const NETWORK_POLICY: &str = "off";
/// Bytes returned by a file read of the running workspace or its stopped disk (`max_bytes`).
pub const READ_MAX_BYTES: u64 = 65_536;
/// Snapshot `reset_workspace` restores when none is named.
pub const RESET_SNAPSHOT: &str = pyro_tree::names::BASELINE_SNAPSHOT;
/// Characters returned by one `read_shell` (`max_chars`).
pub const SHELL_MAX_CHARS: u64 = 65_536;
/// PTY width of a new shell, in columns (`cols`).
pub const SHELL_COLS: u16 = 120;
/// PTY height of a new shell, in rows (`rows`).
pub const SHELL_ROWS: u16 = 30;
/// Signal `signal_shell` sends when none is named.
pub const SHELL_SIGNAL: &str = "INT";
/// Seconds `start_service` waits for its readiness check (`ready_timeout_seconds`).
pub const READY_TIMEOUT_SECONDS: u64 = 30;
/// Milliseconds between readiness checks (`ready_interval_ms`).
pub const READY_INTERVAL_MS: u64 = 500;
/// Lines per stream returned by `logs_service` (`tail_lines`).
pub const TAIL_LINES: u64 = 200;
/// Timeout of a background command (`exec --background`) when none is given: 1 hour.
pub const BACKGROUND_TIMEOUT_SECONDS: u64 = 3600;
/// Output bytes one `workspace command read` returns by default.
pub const COMMAND_READ_MAX_BYTES: u64 = 65_536;
/// How long `workspace command wait` waits by default, in seconds.
pub const COMMAND_WAIT_SECONDS: u64 = 30;
