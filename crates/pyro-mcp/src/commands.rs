//! Background command tools: `workspace_exec` with `background: true` starts one, and
//! `workspace_command_status|read|wait|kill` follow it from any client, also after the client
//! that started it is gone (the command is not tied to any call).

use crate::params::Args;
use crate::PyroMcp;
use pyro::workspace::{WorkspaceCommandInfo, WorkspaceCommandOutput, WorkspaceExecResult};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, Json, RoleServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

type Ctx = RequestContext<RoleServer>;

fn args<T>(a: Args<T>) -> Result<T, String> {
    a.0.map_err(|e| crate::tool_error(&pyro::Error::InvalidInput(e)))
}

/// What `workspace_exec` answers: the finished command's result, or with `background: true`
/// the started command's info (`command_id`, `state`).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(extend("type" = "object"))]
pub enum ExecOutcome {
    /// The command ran to its end.
    Done(WorkspaceExecResult),
    /// The command was started in the background.
    Background(WorkspaceCommandInfo),
}

fn wait_default() -> u64 {
    pyro::defaults::COMMAND_WAIT_SECONDS
}
fn read_default() -> u64 {
    pyro::defaults::COMMAND_READ_MAX_BYTES
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandIdParams {
    /// The workspace id.
    pub workspace_id: String,
    /// The command id `workspace_exec` with `background: true` returned.
    pub command_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandReadParams {
    /// The workspace id.
    pub workspace_id: String,
    /// The command id.
    pub command_id: String,
    /// Where to read from: 0, or the previous read's `next_cursor` (bytes of both streams).
    #[serde(default)]
    pub cursor: u64,
    /// Output bytes to return at most, 1..=1048576.
    #[serde(default = "read_default")]
    #[schemars(range(min = 1, max = 1048576))]
    pub max_bytes: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandWaitParams {
    /// The workspace id.
    pub workspace_id: String,
    /// The command id.
    pub command_id: String,
    /// Wait at most this long, 0..=3600; keep it below your client's tool-call timeout and
    /// call again while `state` is `running`.
    #[serde(default = "wait_default")]
    #[schemars(range(max = 3600))]
    pub timeout_seconds: u64,
}

#[tool_router(router = command_tools, vis = "pub(crate)")]
impl PyroMcp {
    /// A background command's state: running, exited, killed or timed_out, its exit code,
    /// duration, output size, and once ended its history entry (`sequence`).
    #[tool(annotations(
        title = "Background command status",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_command_status(
        &self,
        Parameters(a): Parameters<Args<CommandIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceCommandInfo>, String> {
        let a = args(a)?;
        self.call("workspace_command_status", &ctx, self.pyro.status_workspace_command(&a.workspace_id, &a.command_id))
            .await
    }

    /// Read a background command's output from `cursor` (0 first, then `next_cursor`):
    /// stdout and stderr of the slice, `has_more` when more is already there. The guest keeps
    /// the newest 8 MiB of output; older output is reported as `dropped_bytes`.
    #[tool(annotations(
        title = "Read background command output",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_command_read(
        &self,
        Parameters(a): Parameters<Args<CommandReadParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceCommandOutput>, String> {
        let a = args(a)?;
        self.call(
            "workspace_command_read",
            &ctx,
            self.pyro.read_workspace_command(&a.workspace_id, &a.command_id, a.cursor, a.max_bytes),
        )
        .await
    }

    /// Wait for a background command to end, at most `timeout_seconds`; answers its state
    /// either way (still `running` at the timeout: it is not killed).
    #[tool(annotations(
        title = "Wait for a background command",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_command_wait(
        &self,
        Parameters(a): Parameters<Args<CommandWaitParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceCommandInfo>, String> {
        let a = args(a)?;
        self.call(
            "workspace_command_wait",
            &ctx,
            self.pyro.wait_workspace_command(&a.workspace_id, &a.command_id, a.timeout_seconds),
        )
        .await
    }

    /// Kill a background command's whole process group (TERM, KILL after 2 s). It ends
    /// `killed` and is recorded in the history (workspace_logs).
    #[tool(annotations(
        title = "Kill a background command",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_command_kill(
        &self,
        Parameters(a): Parameters<Args<CommandIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceCommandInfo>, String> {
        let a = args(a)?;
        self.call("workspace_command_kill", &ctx, self.pyro.kill_workspace_command(&a.workspace_id, &a.command_id))
            .await
    }
}

/// `workspace_exec`'s one SDK call, foreground or background.
pub(crate) async fn exec(
    pyro: &pyro::Pyro,
    workspace_id: &str,
    command: &str,
    timeout_seconds: Option<u64>,
    background: bool,
    secret_env: Option<std::collections::BTreeMap<String, String>>,
) -> pyro::Result<ExecOutcome> {
    let default = if background { pyro::defaults::BACKGROUND_TIMEOUT_SECONDS } else { pyro::defaults::TIMEOUT_SECONDS };
    let opts = pyro::workspace::WorkspaceExecOptions {
        timeout_seconds: timeout_seconds.unwrap_or(default),
        secret_env,
        sync: false,
    };
    if background {
        pyro.start_workspace_command(workspace_id, command, &opts).await.map(ExecOutcome::Background)
    } else {
        pyro.exec_workspace_with(workspace_id, command, &opts).await.map(ExecOutcome::Done)
    }
}
