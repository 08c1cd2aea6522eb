//! `workspace_summary` (workspace-core, workspace-full and every mode but cold-start).

use crate::params::{Args, WorkspaceIdParams};
use crate::PyroMcp;
use pyro::workspace::WorkspaceSummary;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, Json, RoleServer};

#[tool_router(router = summary_tools, vis = "pub(crate)")]
impl PyroMcp {
    /// One review payload for a workspace since its creation or last reset: syncs, file
    /// writes, patches, exports, services started/stopped, snapshots, the command history
    /// (exit codes, durations) and the current diff stat (files added/modified/deleted,
    /// lines +/-; the same comparison as workspace_diff, without the patch text). Use it to
    /// review what happened in one call; workspace_diff has the patch, workspace_logs the
    /// outputs. The diff needs a started workspace (`diff_error` says why it is missing).
    #[tool(annotations(
        title = "Summarise a workspace for review",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_summary(
        &self,
        Parameters(a): Parameters<Args<WorkspaceIdParams>>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<WorkspaceSummary>, String> {
        let a = crate::tools::args(a)?;
        self.call("workspace_summary", &ctx, self.pyro.summary_workspace(&a.workspace_id)).await
    }
}
