//! pyro's MCP server: every tool is a thin adapter that turns its arguments into one
//! [`pyro::Pyro`] call and returns the SDK payload as `structuredContent` (with an
//! `outputSchema` from the payload type). No engine logic lives here.
//!
//! - Profiles ([`Profile`]) select which tools are listed; modes ([`Mode`]) are smaller,
//!   task-shaped sets with their own descriptions and narrower schemas. Every surface is
//!   pinned by crates/pyro-mcp/tests/mcp-tool-surface.txt.
//! - `tools/list` is sorted by name and, on protocol 2026-07-28, cacheable: the list is
//!   fixed for the server's lifetime (`ttlMs` [`TOOLS_LIST_TTL_MS`], `cacheScope: public`).
//! - Schemas use only standard JSON Schema formats ([`schema::StandardFormats`]).
//! - Tool failures are `isError` results whose text is `{"ok": false, "error", "code"}`.
//! - With a client progress token, a call reports progress (engine events and a heartbeat).
//! - `notifications/cancelled` drops the call's future; the per-VM supervisor then cancels
//!   the guest work of that call (a cancelled `workspace_exec` kills its command).
//! - Calls run concurrently (rmcp spawns a task per request; nothing here serialises them).

mod commands;
mod modes;
mod params;
pub mod schema;
mod serve;
mod tasks;
pub mod token;
mod tools;
mod tools_summary;

pub use modes::Mode;
pub use serve::{serve_http, serve_stdio, HttpOptions};
pub use tasks::TASK_TOOLS;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::{tool_handler, Json, Peer, RoleServer, ServerHandler};
use std::future::Future;
use std::time::{Duration, Instant};

/// A tool profile: which tools a server exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Only `vm_run`: one command in a fresh, disposable VM.
    VmRun,
    /// The workspace tools an agent needs day to day (the default).
    WorkspaceCore,
    /// Everything: lifecycle, snapshots, disk tools, shells, services, secrets, low-level VMs.
    WorkspaceFull,
}

impl Profile {
    /// Every profile, smallest first.
    pub const ALL: [Profile; 3] = [Profile::VmRun, Profile::WorkspaceCore, Profile::WorkspaceFull];

    /// The profile's name as `pyro mcp serve --profile` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::VmRun => "vm-run",
            Profile::WorkspaceCore => "workspace-core",
            Profile::WorkspaceFull => "workspace-full",
        }
    }

    /// Parse a profile name; the error names every profile.
    pub fn parse(name: &str) -> Result<Profile, String> {
        Profile::ALL.into_iter().find(|p| p.as_str() == name).ok_or_else(|| {
            format!("unknown MCP profile '{name}'; expected one of: vm-run, workspace-core, workspace-full")
        })
    }

    /// The tool names of this profile, sorted.
    pub fn tool_names(self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = match self {
            Profile::VmRun => VM_RUN_TOOLS.to_vec(),
            Profile::WorkspaceCore => WORKSPACE_CORE_TOOLS.to_vec(),
            Profile::WorkspaceFull => WORKSPACE_FULL_TOOLS.to_vec(),
        };
        v.sort_unstable();
        v
    }
}

/// Tools of the `vm-run` profile.
pub const VM_RUN_TOOLS: &[&str] = &["vm_run"];

/// Tools of the `workspace-core` profile (the default): what an agent needs day to day.
pub const WORKSPACE_CORE_TOOLS: &[&str] = &[
    "vm_run",
    "workspace_command_kill",
    "workspace_command_read",
    "workspace_command_status",
    "workspace_command_wait",
    "workspace_create",
    "workspace_delete",
    "workspace_diff",
    "workspace_exec",
    "workspace_export",
    "workspace_file_list",
    "workspace_file_read",
    "workspace_file_write",
    "workspace_list",
    "workspace_logs",
    "workspace_patch_apply",
    "workspace_reset",
    "workspace_status",
    "workspace_summary",
    "workspace_sync_push",
    "workspace_update",
];

/// Tools of the `workspace-full` profile: every tool the server has.
pub const WORKSPACE_FULL_TOOLS: &[&str] = &[
    "service_list",
    "service_logs",
    "service_start",
    "service_status",
    "service_stop",
    "shell_close",
    "shell_open",
    "shell_read",
    "shell_signal",
    "shell_write",
    "snapshot_create",
    "snapshot_delete",
    "snapshot_list",
    "vm_create",
    "vm_delete",
    "vm_exec",
    "vm_list_environments",
    "vm_network_info",
    "vm_reap_expired",
    "vm_run",
    "vm_start",
    "vm_status",
    "vm_stop",
    "workspace_command_kill",
    "workspace_command_read",
    "workspace_command_status",
    "workspace_command_wait",
    "workspace_create",
    "workspace_delete",
    "workspace_diff",
    "workspace_disk_export",
    "workspace_disk_list",
    "workspace_disk_read",
    "workspace_exec",
    "workspace_export",
    "workspace_file_list",
    "workspace_file_read",
    "workspace_file_write",
    "workspace_fork",
    "workspace_list",
    "workspace_logs",
    "workspace_patch_apply",
    "workspace_pause",
    "workspace_reset",
    "workspace_resume",
    "workspace_start",
    "workspace_status",
    "workspace_stop",
    "workspace_summary",
    "workspace_sync_push",
    "workspace_update",
];

/// How long a client may treat a `tools/list` answer as fresh (2026-07-28 revision,
/// `ttlMs`): a server's tool list never changes while it runs, so an hour; a restarted
/// server is a new connection, which lists again anyway.
pub const TOOLS_LIST_TTL_MS: u64 = 3_600_000;

/// The MCP server: one engine, one profile or mode. Cheap to clone (one per HTTP session).
#[derive(Clone)]
pub struct PyroMcp {
    pyro: pyro::Pyro,
    profile: Profile,
    /// The mode, when the server serves one (it then decides the tools; see [`Mode`]).
    mode: Option<Mode>,
    /// Set only by the operator (`pyro mcp serve --allow-host-compat`); a client's
    /// `allow_host_compat: true` is refused without it.
    operator_allows_host_compat: bool,
    /// The operator's default `idle_pause_seconds` for workspaces created without one
    /// (`pyro mcp serve --idle-pause-seconds`, `$PYRO_MCP_IDLE_PAUSE_SECONDS`).
    idle_pause_default: Option<u64>,
    /// The project `workspace_create` seeds from when the client gives no `seed_path`
    /// (`pyro mcp serve --project-path/--repo-url`, or the Git checkout around its cwd).
    project: Option<pyro::project::Project>,
    /// Long calls run as tasks for clients declaring the tasks extension (see [`TASK_TOOLS`]).
    /// Shared by every clone, so HTTP requests served statelessly find each other's tasks.
    tasks: tasks::Tasks,
    router: ToolRouter<PyroMcp>,
}

/// Name of the environment variable with the operator's default idle pause.
pub const IDLE_PAUSE_ENV: &str = "PYRO_MCP_IDLE_PAUSE_SECONDS";

/// The operator's default idle pause from [`IDLE_PAUSE_ENV`]: `None` when unset or empty.
pub fn idle_pause_default_from_env() -> Result<Option<u64>, String> {
    match std::env::var(IDLE_PAUSE_ENV) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<u64>().map(Some).map_err(|_| {
            format!("{IDLE_PAUSE_ENV} must be a number of seconds (0 turns the idle pause off), got '{v}'")
        }),
        _ => Ok(None),
    }
}

impl PyroMcp {
    /// A server over `pyro` listing exactly the tools of `profile`; host-compat is refused
    /// until [`PyroMcp::with_host_compat_allowed`].
    pub fn new(pyro: pyro::Pyro, profile: Profile) -> Self {
        let mut router = Self::shared_tools();
        match profile {
            Profile::WorkspaceFull => router += Self::full_variants(),
            _ => router += Self::core_variants(),
        }
        router += Self::shell_service_tools();
        router += Self::summary_tools();
        router += Self::command_tools();
        keep_only(&mut router, &profile.tool_names());
        for route in router.map.values_mut() {
            schema::standardize_tool(&mut route.attr);
        }
        PyroMcp {
            pyro,
            profile,
            mode: None,
            operator_allows_host_compat: false,
            idle_pause_default: None,
            project: None,
            tasks: tasks::Tasks::default(),
            router,
        }
    }

    /// A server listing exactly the tools of `mode`, with the mode's descriptions and
    /// narrower input schemas (a call passing a parameter the mode dropped is refused).
    /// [`PyroMcp::profile`] is then the smallest profile holding the mode's tools.
    pub fn with_mode(pyro: pyro::Pyro, mode: Mode) -> Self {
        let mut router = Self::shared_tools();
        router += Self::core_variants();
        router += Self::shell_service_tools();
        router += Self::summary_tools();
        router += Self::command_tools();
        keep_only(&mut router, &mode.tool_names());
        for route in router.map.values_mut() {
            let tool = &mut route.attr;
            if let Some(d) = mode.description(&tool.name) {
                tool.description = Some(d.into());
            }
            let mut input = (*tool.input_schema).clone();
            for p in mode.dropped_params(&tool.name) {
                if let Some(props) = input.get_mut("properties").and_then(|v| v.as_object_mut()) {
                    props.remove(*p);
                }
                if let Some(req) = input.get_mut("required").and_then(|v| v.as_array_mut()) {
                    req.retain(|r| r.as_str() != Some(*p));
                }
            }
            tool.input_schema = std::sync::Arc::new(input);
            schema::standardize_tool(tool);
        }
        let profile = mode.compatible_profiles().first().copied().unwrap_or(Profile::WorkspaceFull);
        PyroMcp {
            pyro,
            profile,
            mode: Some(mode),
            operator_allows_host_compat: false,
            idle_pause_default: None,
            project: None,
            tasks: tasks::Tasks::default(),
            router,
        }
    }

    /// Let clients ask for `allow_host_compat: true` (commands on the host, unsandboxed, when
    /// no VM backend works). Off by default: that choice belongs to whoever runs the server,
    /// never to the agent calling it.
    pub fn with_host_compat_allowed(mut self, allowed: bool) -> Self {
        self.operator_allows_host_compat = allowed;
        self
    }

    /// Pause workspaces that clients create without `idle_pause_seconds` after this many
    /// seconds without a call (`None` or 0: off). Refused when out of range.
    pub fn with_idle_pause_default(mut self, seconds: Option<u64>) -> pyro::Result<Self> {
        if let Some(s) = seconds {
            if s > pyro::workspace::MAX_IDLE_PAUSE_SECONDS {
                return Err(pyro::Error::InvalidInput(format!(
                    "the default idle pause must be between 0 and {} seconds",
                    pyro::workspace::MAX_IDLE_PAUSE_SECONDS
                )));
            }
        }
        self.idle_pause_default = seconds.filter(|s| *s > 0);
        Ok(self)
    }

    /// Seed workspaces that clients create without `seed_path` from this project (`None`:
    /// such workspaces start empty).
    pub fn with_project(mut self, project: Option<pyro::project::Project>) -> Self {
        self.project = project;
        self
    }

    /// The project workspaces are seeded from when a client gives no `seed_path`.
    pub fn project(&self) -> Option<&pyro::project::Project> {
        self.project.as_ref()
    }

    /// A client's `idle_pause_seconds`, or the operator's default when absent.
    pub(crate) fn idle_pause_for(&self, requested: Option<u64>) -> Option<u64> {
        requested.or(self.idle_pause_default)
    }

    /// A client's `allow_host_compat` as the engine should see it: `true` only when the
    /// operator allowed host-compat for this server; asked for otherwise, it is an error.
    pub(crate) fn client_host_compat(&self, requested: bool) -> Result<bool, String> {
        if requested && !self.operator_allows_host_compat {
            return Err(tool_error(&pyro::Error::InvalidInput(
                "allow_host_compat=true is refused: running commands on the host without isolation is the \
                 operator's choice, not the client's; start the server with `pyro mcp serve --allow-host-compat` \
                 to permit it"
                    .into(),
            )));
        }
        Ok(requested)
    }

    /// The profile this server was built with.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The mode this server serves, if any.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// A call's arguments the tool's listed schema does not have: refused in a mode (whose
    /// schemas are narrower than the parameter types behind them). Unknown names in a
    /// profile are refused by the parameter types themselves.
    fn unlisted_argument(&self, request: &rmcp::model::CallToolRequestParams) -> Option<String> {
        let mode = self.mode?;
        let tool = self.router.get(&request.name)?;
        let props = tool.input_schema.get("properties").and_then(|p| p.as_object());
        let arg = request.arguments.as_ref()?.keys().find(|k| !props.is_some_and(|p| p.contains_key(*k)))?;
        Some(tool_error(&pyro::Error::InvalidInput(format!(
            "invalid arguments: {} in mode {} has no parameter '{arg}'",
            request.name,
            mode.as_str()
        ))))
    }

    /// The engine the tools call.
    pub fn pyro(&self) -> &pyro::Pyro {
        &self.pyro
    }

    /// The tools this server lists (name, description, schemas, annotations).
    pub fn tools(&self) -> Vec<rmcp::model::Tool> {
        self.router.list_all()
    }

    /// Run one SDK call for a tool: progress when the client asked for it, cancellation when
    /// the client sends `notifications/cancelled` (the SDK future is dropped), and the
    /// error mapping. Every tool goes through here.
    async fn call<T, F>(&self, tool: &'static str, ctx: &RequestContext<RoleServer>, fut: F) -> ToolResult<T>
    where
        F: Future<Output = pyro::Result<T>> + Send,
    {
        let (progress, _forwarder) = match ctx.meta.get_progress_token() {
            Some(token) => {
                let (p, f) = ProgressForwarder::start(tool, ctx.peer.clone(), token);
                (Some(p), Some(f))
            }
            None => (None, None),
        };
        let work = async {
            match progress {
                Some(p) => pyro::progress::scoped(p, fut).await,
                None => fut.await,
            }
        };
        tokio::select! {
            r = work => r.map(Json).map_err(|e| tool_error(&e)),
            _ = ctx.ct.cancelled() => Err(tool_error(&pyro::Error::Cancelled(format!("{tool} was cancelled by the client")))),
        }
    }
}

/// What every tool returns: the payload as structured content, or an `isError` text.
pub(crate) type ToolResult<T> = Result<Json<T>, String>;

/// The text of an `isError` result: the same shape as the CLI's `--json` errors.
pub fn tool_error(e: &pyro::Error) -> String {
    serde_json::json!({"ok": false, "error": e.to_string(), "code": e.code()}).to_string()
}

/// Turns engine progress events into `notifications/progress` for one call, plus a heartbeat
/// every second so a client sees a long boot or command is alive. Stops when dropped.
struct ProgressForwarder(tokio::task::JoinHandle<()>);

impl ProgressForwarder {
    fn start(tool: &'static str, peer: Peer<RoleServer>, token: ProgressToken) -> (pyro::Progress, Self) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let sink = pyro::Progress::new(move |e| {
            let _ = tx.send(format!("{}: {}", e.stage, e.message));
        });
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut step = 0.0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let send = |step: f64, message: String| {
                let (peer, token) = (peer.clone(), token.clone());
                async move {
                    let _ =
                        peer.notify_progress(ProgressNotificationParam::new(token, step).with_message(message)).await;
                }
            };
            send(step, format!("{tool}: started")).await;
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => { step += 1.0; send(step, m).await; }
                        None => break,
                    },
                    _ = tick.tick() => {
                        step += 1.0;
                        send(step, format!("{tool}: running for {} s", started.elapsed().as_secs())).await;
                    }
                }
            }
        });
        (sink, ProgressForwarder(task))
    }
}

impl Drop for ProgressForwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The server's instructions to clients without a mode.
const INSTRUCTIONS: &str = "pyro runs commands in disposable Linux microVMs. For one-off commands use vm_run. For multi-step work create a workspace (workspace_create), then exec, read/write files, apply patches and diff against the baseline; workspace_summary reviews it in one call; delete it when done. Workspaces expire after ttl_seconds (default 600): they are then stopped with their disk kept, never deleted silently. Host paths (seed_path, source_path, output_path) are on the machine running this server; without seed_path, workspace_create seeds from the server's project (its Git checkout's files) when it has one.";

/// Remove every route whose name is not in `wanted`.
fn keep_only(router: &mut ToolRouter<PyroMcp>, wanted: &[&str]) {
    let names: Vec<String> = router.map.keys().map(|n| n.to_string()).collect();
    for name in names {
        if !wanted.contains(&name.as_str()) {
            router.remove_route(&name);
        }
    }
}

#[tool_handler(router = self.router)]
impl ServerHandler for PyroMcp {
    fn get_info(&self) -> rmcp::model::ServerConfig {
        rmcp::model::ServerConfig::new(rmcp::model::ServerCapabilities::builder().enable_tools().enable_tasks().build())
            .with_server_info(rmcp::model::Implementation::new("pyro", env!("CARGO_PKG_VERSION")))
            .with_instructions(self.mode.map_or(INSTRUCTIONS, Mode::instructions).to_string())
    }

    /// Sorted by name (`ToolRouter::list_all` sorts), with cache hints for clients on the
    /// 2026-07-28 revision (older ones get neither field; rmcp strips them).
    async fn list_tools(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, rmcp::ErrorData> {
        let mut result = rmcp::model::ListToolsResult::with_all_items(self.router.list_all());
        if context.protocol_version().is_some_and(|v| v >= rmcp::model::ProtocolVersion::V_2026_07_28) {
            result = result.with_ttl_ms(TOOLS_LIST_TTL_MS).with_cache_scope(rmcp::model::CacheScope::Public);
        }
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        if let Some(error) = self.unlisted_argument(&request) {
            return Ok(rmcp::model::CallToolResult::error(vec![rmcp::model::ContentBlock::text(error)]).into());
        }
        if tasks::wants_task(&request, &context) {
            return Ok(self.start_task(request, context));
        }
        let tcc = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        self.router.call(tcc).await
    }

    async fn get_task(
        &self,
        request: rmcp::model::GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, rmcp::ErrorData> {
        self.tasks.manager.get_task(&request.task_id).map(rmcp::model::GetTaskResult::new)
    }

    /// pyro's tasks never ask the client for input; accepted (and ignored) as the spec asks.
    async fn update_task(
        &self,
        request: rmcp::model::UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        self.tasks.manager.update_task(&request.task_id, request.input_responses)
    }

    async fn cancel_task(
        &self,
        request: rmcp::model::CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        self.tasks.manager.cancel_task(&request.task_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_membership_counts() {
        assert_eq!(Profile::VmRun.tool_names().len(), 1);
        assert_eq!(Profile::WorkspaceCore.tool_names().len(), 21);
        assert_eq!(Profile::WorkspaceFull.tool_names().len(), 51);
        for t in WORKSPACE_CORE_TOOLS {
            assert!(WORKSPACE_FULL_TOOLS.contains(t), "{t}");
        }
    }

    #[test]
    fn unknown_profile_lists_the_profiles() {
        assert_eq!(
            Profile::parse("nope").unwrap_err(),
            "unknown MCP profile 'nope'; expected one of: vm-run, workspace-core, workspace-full"
        );
    }
}
