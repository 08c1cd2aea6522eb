//! The tools. Each one: check its arguments, make one SDK call through [`PyroMcp::call`],
//! return the payload. Descriptions say what the tool does, when to use it, and what is kept.

use crate::params::*;
use crate::PyroMcp;
use pyro::env::EnvironmentList;
use pyro::vm::{DeleteVmResult, NetworkInfo, ReapResult, RunResult, VmInfo};
use pyro::workspace::*;
use pyro::CreateVmOptions;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, Json, RoleServer};
use std::path::Path;

type Ctx = RequestContext<RoleServer>;

/// Bad arguments become an `isError` result naming the problem.
pub(crate) fn args<T>(a: Args<T>) -> Result<T, String> {
    a.0.map_err(|e| crate::tool_error(&pyro::Error::InvalidInput(e)))
}

fn vm_opts(
    environment: String,
    vcpu_count: u32,
    mem_mib: u32,
    ttl_seconds: u64,
    network: bool,
    allow_host_compat: bool,
) -> CreateVmOptions {
    CreateVmOptions { environment, vcpu_count, mem_mib, ttl_seconds, network, allow_host_compat }
}

#[tool_router(router = shared_tools, vis = "pub(crate)")]
impl PyroMcp {
    /// Run one shell command in a fresh, isolated Linux microVM and delete the VM afterwards.
    /// Use for one-off commands that need no state; nothing survives the call. Returns
    /// stdout, stderr, exit_code (124 on timeout) and the cleanup record. Installs the
    /// environment first if needed (slow the first time; progress is reported).
    #[tool(annotations(
        title = "Run a command in a fresh VM",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = true
    ))]
    async fn vm_run(&self, Parameters(a): Parameters<Args<VmRunParams>>, ctx: Ctx) -> Result<Json<RunResult>, String> {
        let a = args(a)?;
        let opts = vm_opts(
            a.environment,
            a.vcpu_count,
            a.mem_mib,
            a.ttl_seconds,
            a.network,
            self.client_host_compat(a.allow_host_compat)?,
        );
        self.call("vm_run", &ctx, self.pyro.run_in_vm(opts, &a.command, a.timeout_seconds)).await
    }

    /// List the catalog environments (debian:12, debian:12-base, debian:12-build) with their
    /// packages and whether each is installed on this host.
    #[tool(annotations(
        title = "List environments",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn vm_list_environments(&self, ctx: Ctx) -> Result<Json<EnvironmentList>, String> {
        let pyro = self.pyro.clone();
        self.call("vm_list_environments", &ctx, pyro.list_environments()).await
    }

    /// Create (but do not boot) a low-level ephemeral VM owned by this server; boot it with
    /// vm_start. It is deleted by vm_exec, vm_delete, its TTL (default 600 s; vm_reap_expired)
    /// or when the server exits. Prefer vm_run or workspaces unless you need this control.
    #[tool(annotations(
        title = "Create an ephemeral VM",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn vm_create(
        &self,
        Parameters(a): Parameters<Args<VmCreateParams>>,
        ctx: Ctx,
    ) -> Result<Json<VmInfo>, String> {
        let a = args(a)?;
        let opts = vm_opts(
            a.environment,
            a.vcpu_count,
            a.mem_mib,
            a.ttl_seconds,
            a.network,
            self.client_host_compat(a.allow_host_compat)?,
        );
        self.call("vm_create", &ctx, self.pyro.create_vm(opts)).await
    }

    /// Boot a VM made by vm_create and wait until its guest agent answers (a few seconds).
    /// A no-op on a started VM.
    #[tool(annotations(
        title = "Boot an ephemeral VM",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn vm_start(&self, Parameters(a): Parameters<Args<VmIdParams>>, ctx: Ctx) -> Result<Json<VmInfo>, String> {
        let a = args(a)?;
        self.call("vm_start", &ctx, self.pyro.start_vm(&a.vm_id)).await
    }

    /// Run one shell command in a started ephemeral VM, then delete the VM (always, even when
    /// the command fails). Returns stdout, stderr and exit_code (124 on timeout).
    #[tool(annotations(
        title = "Run a command in an ephemeral VM, then delete it",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = true
    ))]
    async fn vm_exec(
        &self,
        Parameters(a): Parameters<Args<VmExecParams>>,
        ctx: Ctx,
    ) -> Result<Json<RunResult>, String> {
        let a = args(a)?;
        self.call("vm_exec", &ctx, self.pyro.exec_vm(&a.vm_id, &a.command, a.timeout_seconds)).await
    }

    /// Shut down an ephemeral VM; its record stays until vm_delete (its disk is throwaway).
    #[tool(annotations(
        title = "Stop an ephemeral VM",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn vm_stop(&self, Parameters(a): Parameters<Args<VmIdParams>>, ctx: Ctx) -> Result<Json<VmInfo>, String> {
        let a = args(a)?;
        self.call("vm_stop", &ctx, self.pyro.stop_vm(&a.vm_id)).await
    }

    /// Delete an ephemeral VM and everything it has on the host.
    #[tool(annotations(
        title = "Delete an ephemeral VM",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn vm_delete(
        &self,
        Parameters(a): Parameters<Args<VmIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<DeleteVmResult>, String> {
        let a = args(a)?;
        self.call("vm_delete", &ctx, self.pyro.delete_vm(&a.vm_id)).await
    }

    /// State of an ephemeral VM (created, started, stopped), its limits, backend and expiry.
    /// An expired VM is deleted and reported as an error.
    #[tool(annotations(
        title = "Ephemeral VM status",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn vm_status(&self, Parameters(a): Parameters<Args<VmIdParams>>, ctx: Ctx) -> Result<Json<VmInfo>, String> {
        let a = args(a)?;
        self.call("vm_status", &ctx, self.pyro.status_vm(&a.vm_id)).await
    }

    /// Network facts of an ephemeral VM: guest IP, gateway, DNS, whether outbound access is
    /// expected.
    #[tool(annotations(
        title = "Ephemeral VM network info",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn vm_network_info(
        &self,
        Parameters(a): Parameters<Args<VmIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<NetworkInfo>, String> {
        let a = args(a)?;
        let pyro = self.pyro.clone();
        self.call("vm_network_info", &ctx, async move { pyro.network_info_vm(&a.vm_id).await }).await
    }

    /// Delete every ephemeral VM of this server whose TTL has passed. Workspaces are not
    /// affected.
    #[tool(annotations(
        title = "Delete expired ephemeral VMs",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn vm_reap_expired(&self, ctx: Ctx) -> Result<Json<ReapResult>, String> {
        self.call("vm_reap_expired", &ctx, self.pyro.reap_expired()).await
    }

    /// List all workspaces (any state), most recently active first, with id, name, labels,
    /// state and expiry.
    #[tool(annotations(
        title = "List workspaces",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_list(&self, ctx: Ctx) -> Result<Json<WorkspaceList>, String> {
        self.call("workspace_list", &ctx, self.pyro.list_workspaces()).await
    }

    /// Change a workspace's name or labels (set, clear, or both). Fails if nothing would
    /// change.
    #[tool(annotations(
        title = "Update workspace metadata",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_update(
        &self,
        Parameters(a): Parameters<Args<WorkspaceUpdateParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceInfo>, String> {
        let a = args(a)?;
        let opts = UpdateWorkspaceOptions {
            name: a.name,
            clear_name: a.clear_name,
            labels: a.labels.unwrap_or_default(),
            clear_labels: a.clear_labels.unwrap_or_default(),
            ttl_seconds: None,
            idle_pause_seconds: a.idle_pause_seconds,
        };
        self.call("workspace_update", &ctx, self.pyro.update_workspace(&a.workspace_id, opts)).await
    }

    /// Copy a host directory or archive (on the server's machine) into the started
    /// workspace under `dest` (default /workspace). Existing files are overwritten; nothing
    /// is deleted.
    #[tool(annotations(
        title = "Push host files into a workspace",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_sync_push(
        &self,
        Parameters(a): Parameters<Args<SyncPushParams>>,
        ctx: Ctx,
    ) -> Result<Json<SyncResult>, String> {
        let a = args(a)?;
        self.call(
            "workspace_sync_push",
            &ctx,
            self.pyro.push_workspace_sync(&a.workspace_id, Path::new(&a.source_path), &a.dest),
        )
        .await
    }

    /// Workspace state (started/stopped), limits, expiry, command count, last command,
    /// last_error (e.g. why it was stopped). Cheap; never boots or changes anything.
    #[tool(annotations(
        title = "Workspace status",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_status(
        &self,
        Parameters(a): Parameters<Args<WorkspaceIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceInfo>, String> {
        let a = args(a)?;
        self.call("workspace_status", &ctx, self.pyro.status_workspace(&a.workspace_id)).await
    }

    /// Command history of a workspace (every workspace_exec) with outputs, oldest first.
    /// Kept until the workspace is deleted.
    #[tool(annotations(
        title = "Workspace command history",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_logs(
        &self,
        Parameters(a): Parameters<Args<WorkspaceIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceLogs>, String> {
        let a = args(a)?;
        self.call("workspace_logs", &ctx, self.pyro.logs_workspace(&a.workspace_id)).await
    }

    /// What changed in /workspace since the create-time baseline: per-path status and
    /// git-style text patches. The workspace must be started.
    #[tool(annotations(
        title = "Diff a workspace against its baseline",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_diff(
        &self,
        Parameters(a): Parameters<Args<WorkspaceIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<DiffResult>, String> {
        let a = args(a)?;
        self.call("workspace_diff", &ctx, self.pyro.diff_workspace(&a.workspace_id)).await
    }

    /// Delete a workspace: its VM, disk, snapshots and history. Irreversible; works in any
    /// state. Use when the work is finished (export results first).
    #[tool(annotations(
        title = "Delete a workspace",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn workspace_delete(
        &self,
        Parameters(a): Parameters<Args<WorkspaceIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<DeleteWorkspaceResult>, String> {
        let a = args(a)?;
        self.call("workspace_delete", &ctx, self.pyro.delete_workspace(&a.workspace_id)).await
    }

    /// Stop a workspace: clean guest shutdown, disk kept (e2fsck-clean). Frees CPU and
    /// memory; workspace_start boots it again with /workspace, snapshots and history intact.
    /// Needed before the workspace_disk_* tools. Idempotent.
    #[tool(annotations(
        title = "Stop a workspace",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_stop(
        &self,
        Parameters(a): Parameters<Args<WorkspaceIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceInfo>, String> {
        let a = args(a)?;
        self.call("workspace_stop", &ctx, self.pyro.stop_workspace(&a.workspace_id)).await
    }

    /// Boot a stopped workspace again on the same disk (a few seconds). A no-op when it is
    /// already started. An expired workspace must be extended first.
    #[tool(annotations(
        title = "Start a workspace",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_start(
        &self,
        Parameters(a): Parameters<Args<WorkspaceIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceInfo>, String> {
        let a = args(a)?;
        self.call("workspace_start", &ctx, self.pyro.start_workspace(&a.workspace_id)).await
    }

    /// Copy a file or directory from /workspace to a new host path (on the server's machine);
    /// refuses to overwrite. The workspace must be started.
    #[tool(annotations(
        title = "Export files from a workspace",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn workspace_export(
        &self,
        Parameters(a): Parameters<Args<ExportParams>>,
        ctx: Ctx,
    ) -> Result<Json<ExportResult>, String> {
        let a = args(a)?;
        self.call(
            "workspace_export",
            &ctx,
            self.pyro.export_workspace(&a.workspace_id, &a.path, Path::new(&a.output_path)),
        )
        .await
    }

    /// List a directory of the started workspace (under /workspace): type, size, link target.
    #[tool(annotations(
        title = "List workspace files",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_file_list(
        &self,
        Parameters(a): Parameters<Args<PathListParams>>,
        ctx: Ctx,
    ) -> Result<Json<FileListResult>, String> {
        let a = args(a)?;
        self.call("workspace_file_list", &ctx, self.pyro.list_workspace_files(&a.workspace_id, &a.path, a.recursive))
            .await
    }

    /// Read a text file of the started workspace (up to max_bytes, hard limit 1 MiB;
    /// `truncated` says if there is more).
    #[tool(annotations(
        title = "Read a workspace file",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_file_read(
        &self,
        Parameters(a): Parameters<Args<PathReadParams>>,
        ctx: Ctx,
    ) -> Result<Json<FileReadResult>, String> {
        let a = args(a)?;
        self.call("workspace_file_read", &ctx, self.pyro.read_workspace_file(&a.workspace_id, &a.path, a.max_bytes))
            .await
    }

    /// Create or replace a text file in the started workspace (UTF-8, at most 1 MiB; parent
    /// directories are created; an existing file keeps its mode).
    #[tool(annotations(
        title = "Write a workspace file",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_file_write(
        &self,
        Parameters(a): Parameters<Args<FileWriteParams>>,
        ctx: Ctx,
    ) -> Result<Json<FileWriteResult>, String> {
        let a = args(a)?;
        self.call("workspace_file_write", &ctx, self.pyro.write_workspace_file(&a.workspace_id, &a.path, &a.text)).await
    }

    /// Apply a unified diff (git diff output: adds, deletes, modifications) to /workspace of
    /// the started workspace. All hunks are checked first; on any mismatch nothing is written.
    #[tool(annotations(
        title = "Apply a patch to a workspace",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn workspace_patch_apply(
        &self,
        Parameters(a): Parameters<Args<PatchParams>>,
        ctx: Ctx,
    ) -> Result<Json<PatchResult>, String> {
        let a = args(a)?;
        self.call("workspace_patch_apply", &ctx, self.pyro.apply_workspace_patch(&a.workspace_id, &a.patch)).await
    }

    /// Write a stopped workspace's disk as a raw, sparse ext4 image to a new host path (on the
    /// server's machine). Never boots or changes the workspace; refuses to overwrite.
    #[tool(annotations(
        title = "Export a stopped workspace's disk image",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn workspace_disk_export(
        &self,
        Parameters(a): Parameters<Args<DiskExportParams>>,
        ctx: Ctx,
    ) -> Result<Json<DiskExportResult>, String> {
        let a = args(a)?;
        self.call(
            "workspace_disk_export",
            &ctx,
            self.pyro.export_workspace_disk(&a.workspace_id, Path::new(&a.output_path)),
        )
        .await
    }

    /// List a directory of a stopped workspace's disk without booting it (milliseconds).
    /// Use to inspect a stopped or expired workspace cheaply.
    #[tool(annotations(
        title = "List a stopped workspace's disk",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_disk_list(
        &self,
        Parameters(a): Parameters<Args<PathListParams>>,
        ctx: Ctx,
    ) -> Result<Json<DiskListResult>, String> {
        let a = args(a)?;
        self.call("workspace_disk_list", &ctx, self.pyro.list_workspace_disk(&a.workspace_id, &a.path, a.recursive))
            .await
    }

    /// Read a file from a stopped workspace's disk without booting it (up to max_bytes).
    #[tool(annotations(
        title = "Read a file from a stopped workspace's disk",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_disk_read(
        &self,
        Parameters(a): Parameters<Args<PathReadParams>>,
        ctx: Ctx,
    ) -> Result<Json<DiskReadResult>, String> {
        let a = args(a)?;
        self.call("workspace_disk_read", &ctx, self.pyro.read_workspace_disk(&a.workspace_id, &a.path, a.max_bytes))
            .await
    }

    /// Save /workspace of the started workspace as a named snapshot, to restore later with
    /// workspace_reset. Kept until deleted or the workspace is deleted.
    #[tool(annotations(
        title = "Create a snapshot",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn snapshot_create(
        &self,
        Parameters(a): Parameters<Args<SnapshotParams>>,
        ctx: Ctx,
    ) -> Result<Json<SnapshotCreateResult>, String> {
        let a = args(a)?;
        self.call("snapshot_create", &ctx, self.pyro.create_snapshot(&a.workspace_id, &a.snapshot_name)).await
    }

    /// List a workspace's snapshots (the create-time `baseline` first, then named ones).
    #[tool(annotations(
        title = "List snapshots",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn snapshot_list(
        &self,
        Parameters(a): Parameters<Args<WorkspaceIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<SnapshotList>, String> {
        let a = args(a)?;
        self.call("snapshot_list", &ctx, self.pyro.list_snapshots(&a.workspace_id)).await
    }

    /// Delete a named snapshot (the baseline cannot be deleted).
    #[tool(annotations(
        title = "Delete a snapshot",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn snapshot_delete(
        &self,
        Parameters(a): Parameters<Args<SnapshotParams>>,
        ctx: Ctx,
    ) -> Result<Json<SnapshotDeleteResult>, String> {
        let a = args(a)?;
        self.call("snapshot_delete", &ctx, self.pyro.delete_snapshot(&a.workspace_id, &a.snapshot_name)).await
    }

    /// Restore /workspace from a snapshot (default: the create-time baseline), discarding
    /// every change since. Recreates the VM; history and snapshots are kept.
    #[tool(annotations(
        title = "Reset a workspace to a snapshot",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_reset(
        &self,
        Parameters(a): Parameters<Args<ResetParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceInfo>, String> {
        let a = args(a)?;
        self.call("workspace_reset", &ctx, self.pyro.reset_workspace(&a.workspace_id, &a.snapshot)).await
    }
}

/// `workspace_create` / `workspace_exec` of the `vm-run` and `workspace-core` profiles: no
/// network policy, secrets or secret_env.
#[tool_router(router = core_variants, vis = "pub(crate)")]
impl PyroMcp {
    /// Create a persistent workspace: a microVM with /workspace (optionally seeded from a
    /// host directory or archive, which becomes the diff/reset baseline; without seed_path,
    /// from the server's project when it has one), booted and ready
    /// for workspace_exec and the file tools. It keeps its state across calls until
    /// workspace_delete; after ttl_seconds (default 600) it is stopped with its disk kept.
    /// No network. Returns the workspace_id to pass to every other workspace tool.
    #[tool(
        name = "workspace_create",
        annotations(
            title = "Create a workspace",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn workspace_create_core(
        &self,
        Parameters(a): Parameters<Args<WorkspaceCreateCoreParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceInfo>, String> {
        let a = args(a)?;
        let opts = CreateWorkspaceOptions {
            vcpu_count: a.vcpu_count,
            mem_mib: a.mem_mib,
            ttl_seconds: a.ttl_seconds,
            allow_host_compat: self.client_host_compat(a.allow_host_compat)?,
            seed_path: a.seed_path.map(Into::into),
            project: self.project().cloned(),
            name: a.name,
            labels: a.labels.unwrap_or_default(),
            idle_pause_seconds: self.idle_pause_for(None),
            ..CreateWorkspaceOptions::new(a.environment)
        };
        self.call("workspace_create", &ctx, self.pyro.create_workspace(opts)).await
    }

    /// Run a shell command (`/bin/sh -lc`) in /workspace of a started workspace; recorded in
    /// the history (workspace_logs). Returns stdout, stderr (each capped at 16 MiB, see
    /// `truncated`) and exit_code; a timeout kills the whole process group (exit 124).
    /// Cancelling the call kills the command.
    #[tool(
        name = "workspace_exec",
        annotations(
            title = "Run a command in a workspace",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn workspace_exec_core(
        &self,
        Parameters(a): Parameters<Args<WorkspaceExecCoreParams>>,
        ctx: Ctx,
    ) -> Result<Json<crate::commands::ExecOutcome>, String> {
        let a = args(a)?;
        let exec =
            crate::commands::exec(&self.pyro, &a.workspace_id, &a.command, a.timeout_seconds, a.background, None);
        self.call("workspace_exec", &ctx, exec).await
    }
}

/// `workspace_create` / `workspace_exec` of the `workspace-full` profile.
#[tool_router(router = full_variants, vis = "pub(crate)")]
impl PyroMcp {
    /// Create a persistent workspace: a microVM with /workspace (optionally seeded from a
    /// host directory or archive, which becomes the diff/reset baseline; without seed_path,
    /// from the server's project when it has one), booted and ready
    /// for workspace_exec and the file tools. It keeps its state across calls until
    /// workspace_delete; after ttl_seconds (default 600) it is stopped with its disk kept.
    /// network_policy `egress` gives outbound access; secrets are kept on the host, installed
    /// in guest tmpfs and redacted from all output. Returns the workspace_id.
    #[tool(
        name = "workspace_create",
        annotations(
            title = "Create a workspace",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn workspace_create_full(
        &self,
        Parameters(a): Parameters<Args<WorkspaceCreateFullParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceInfo>, String> {
        let a = args(a)?;
        let opts = CreateWorkspaceOptions {
            vcpu_count: a.vcpu_count,
            mem_mib: a.mem_mib,
            ttl_seconds: a.ttl_seconds,
            network_policy: a.network_policy,
            allow_host_compat: self.client_host_compat(a.allow_host_compat)?,
            seed_path: a.seed_path.map(Into::into),
            project: self.project().cloned(),
            name: a.name,
            labels: a.labels.unwrap_or_default(),
            secrets: a.secrets.unwrap_or_default(),
            idle_pause_seconds: self.idle_pause_for(a.idle_pause_seconds),
            ..CreateWorkspaceOptions::new(a.environment)
        };
        self.call("workspace_create", &ctx, self.pyro.create_workspace(opts)).await
    }

    /// Run a shell command (`/bin/sh -lc`) in /workspace of a started workspace; recorded in
    /// the history (workspace_logs). Returns stdout, stderr (each capped at 16 MiB, see
    /// `truncated`) and exit_code; a timeout kills the whole process group (exit 124).
    /// secret_env maps secret names to environment variables for this command. Cancelling
    /// the call kills the command.
    #[tool(
        name = "workspace_exec",
        annotations(
            title = "Run a command in a workspace",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn workspace_exec_full(
        &self,
        Parameters(a): Parameters<Args<WorkspaceExecFullParams>>,
        ctx: Ctx,
    ) -> Result<Json<crate::commands::ExecOutcome>, String> {
        let a = args(a)?;
        let exec = crate::commands::exec(
            &self.pyro,
            &a.workspace_id,
            &a.command,
            a.timeout_seconds,
            a.background,
            a.secret_env,
        );
        self.call("workspace_exec", &ctx, exec).await
    }
}

/// Shells (PTY sessions) and services (named background processes) of `workspace-full`,
/// and pause, resume and fork.
#[tool_router(router = shell_service_tools, vis = "pub(crate)")]
impl PyroMcp {
    /// Pause a running workspace: its guest's memory and device state are saved on the host
    /// and its VM ends (no CPU or RAM used). Processes, shells, services, /run secrets and
    /// published ports survive; workspace_resume, or any exec/file/shell/service call,
    /// brings it back in about a second. Returns the workspace with workspace_pause
    /// (state_bytes, pause_ms). Refused on a stopped workspace; a no-op when paused.
    #[tool(annotations(
        title = "Pause a workspace",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn workspace_pause(
        &self,
        Parameters(a): Parameters<Args<WorkspaceIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceInfo>, String> {
        let a = args(a)?;
        self.call("workspace_pause", &ctx, self.pyro.pause_workspace(&a.workspace_id)).await
    }

    /// Resume a paused workspace where it was paused (same processes and PIDs). Refused on a
    /// running workspace (nothing to resume) and on a stopped one (use workspace_start).
    /// Returns the workspace with workspace_resume (resume_ms).
    #[tool(annotations(
        title = "Resume a workspace",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn workspace_resume(
        &self,
        Parameters(a): Parameters<Args<WorkspaceIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<WorkspaceInfo>, String> {
        let a = args(a)?;
        self.call("workspace_resume", &ctx, self.pyro.resume_workspace(&a.workspace_id)).await
    }

    /// Fork a workspace into `count` (1..8) new, independent workspaces with copy-on-write
    /// disks. From a running or paused workspace each child also gets a copy of its memory:
    /// files, running processes, shells and services are as they were (each child has its
    /// own id, hostname and fresh randomness). A running parent is paused for the fork and
    /// resumed; a stopped one gives stopped children from its disk. Returns the new
    /// workspaces.
    #[tool(annotations(
        title = "Fork a workspace",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn workspace_fork(
        &self,
        Parameters(a): Parameters<Args<WorkspaceForkParams>>,
        ctx: Ctx,
    ) -> Result<Json<ForkResult>, String> {
        let a = args(a)?;
        let opts = ForkOptions { count: a.count, names: a.names.unwrap_or_default() };
        self.call("workspace_fork", &ctx, self.pyro.fork_workspace(&a.workspace_id, &opts)).await
    }

    /// Open an interactive bash on a PTY in a started workspace, for stateful work (a REPL,
    /// a debugger, a long-running foreground program). Drive it with shell_write and
    /// shell_read; it lives until shell_close or the workspace stops. For single commands
    /// prefer workspace_exec.
    #[tool(annotations(
        title = "Open a shell",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn shell_open(
        &self,
        Parameters(a): Parameters<Args<ShellOpenParams>>,
        ctx: Ctx,
    ) -> Result<Json<shells::ShellInfo>, String> {
        let a = args(a)?;
        let opts = shells::OpenShellOptions {
            cwd: a.cwd,
            cols: a.cols,
            rows: a.rows,
            secret_env: a.secret_env.unwrap_or_default(),
        };
        self.call("shell_open", &ctx, self.pyro.open_shell(&a.workspace_id, opts)).await
    }

    /// Read a shell's output from `cursor` (pass the previous next_cursor to continue). Use
    /// wait_for_idle_ms to wait until a command has finished printing, and plain for a
    /// rendered screen without escape codes. Each shell keeps its last 1 Mi characters.
    #[tool(annotations(
        title = "Read shell output",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn shell_read(
        &self,
        Parameters(a): Parameters<Args<ShellReadParams>>,
        ctx: Ctx,
    ) -> Result<Json<shells::ShellReadResult>, String> {
        let a = args(a)?;
        let opts = shells::ReadShellOptions {
            cursor: a.cursor,
            max_chars: a.max_chars,
            plain: a.plain,
            wait_for_idle_ms: a.wait_for_idle_ms,
        };
        self.call("shell_read", &ctx, self.pyro.read_shell(&a.workspace_id, &a.shell_id, opts)).await
    }

    /// Type text into a shell (Enter appended unless append_newline is false). Read the
    /// result with shell_read.
    #[tool(annotations(
        title = "Write to a shell",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn shell_write(
        &self,
        Parameters(a): Parameters<Args<ShellWriteParams>>,
        ctx: Ctx,
    ) -> Result<Json<shells::ShellWriteResult>, String> {
        let a = args(a)?;
        self.call("shell_write", &ctx, self.pyro.write_shell(&a.workspace_id, &a.shell_id, &a.input, a.append_newline))
            .await
    }

    /// Send a signal (default INT, like Ctrl-C) to the shell's foreground process group.
    #[tool(annotations(
        title = "Signal a shell",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn shell_signal(
        &self,
        Parameters(a): Parameters<Args<ShellSignalParams>>,
        ctx: Ctx,
    ) -> Result<Json<shells::ShellSignalResult>, String> {
        let a = args(a)?;
        self.call("shell_signal", &ctx, self.pyro.signal_shell(&a.workspace_id, &a.shell_id, &a.signal_name)).await
    }

    /// Close a shell and end everything running in it.
    #[tool(annotations(
        title = "Close a shell",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn shell_close(
        &self,
        Parameters(a): Parameters<Args<ShellIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<shells::ShellCloseResult>, String> {
        let a = args(a)?;
        self.call("shell_close", &ctx, self.pyro.close_shell(&a.workspace_id, &a.shell_id)).await
    }

    /// Start a named background service (a dev server, a database) in a started workspace
    /// and wait for its readiness check (first set of ready_file > ready_tcp > ready_http >
    /// ready_command). Optionally publish guest ports on host 127.0.0.1. It runs until
    /// service_stop or the workspace stops; logs stay readable with service_logs.
    #[tool(annotations(
        title = "Start a service",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = true
    ))]
    async fn service_start(
        &self,
        Parameters(a): Parameters<Args<ServiceStartParams>>,
        ctx: Ctx,
    ) -> Result<Json<ServiceInfo>, String> {
        let a = args(a)?;
        let readiness = Readiness::first_of(a.ready_file, a.ready_tcp, a.ready_http, a.ready_command);
        let opts = StartServiceOptions {
            command: a.command,
            cwd: a.cwd,
            readiness,
            ready_timeout_seconds: a.ready_timeout_seconds,
            ready_interval_ms: a.ready_interval_ms,
            secret_env: a.secret_env.unwrap_or_default(),
            published_ports: a.published_ports.unwrap_or_default(),
        };
        self.call("service_start", &ctx, self.pyro.start_service(&a.workspace_id, &a.service_name, opts)).await
    }

    /// List a workspace's services with their state, readiness and published ports.
    #[tool(annotations(
        title = "List services",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn service_list(
        &self,
        Parameters(a): Parameters<Args<WorkspaceIdParams>>,
        ctx: Ctx,
    ) -> Result<Json<ServiceList>, String> {
        let a = args(a)?;
        self.call("service_list", &ctx, self.pyro.list_services(&a.workspace_id)).await
    }

    /// One service's state (running, exited, stopped, failed), exit code and stop reason.
    #[tool(annotations(
        title = "Service status",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn service_status(
        &self,
        Parameters(a): Parameters<Args<ServiceNameParams>>,
        ctx: Ctx,
    ) -> Result<Json<ServiceInfo>, String> {
        let a = args(a)?;
        self.call("service_status", &ctx, self.pyro.status_service(&a.workspace_id, &a.service_name)).await
    }

    /// Stop a service (TERM, then KILL after a grace period). Its logs are kept.
    #[tool(annotations(
        title = "Stop a service",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn service_stop(
        &self,
        Parameters(a): Parameters<Args<ServiceNameParams>>,
        ctx: Ctx,
    ) -> Result<Json<ServiceInfo>, String> {
        let a = args(a)?;
        self.call("service_stop", &ctx, self.pyro.stop_service(&a.workspace_id, &a.service_name)).await
    }

    /// A service's stdout and stderr: the last tail_lines lines of each (or all kept
    /// output), secrets redacted.
    #[tool(annotations(
        title = "Service logs",
        read_only_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn service_logs(
        &self,
        Parameters(a): Parameters<Args<ServiceLogsParams>>,
        ctx: Ctx,
    ) -> Result<Json<ServiceLogs>, String> {
        let a = args(a)?;
        self.call("service_logs", &ctx, self.pyro.logs_service(&a.workspace_id, &a.service_name, a.tail_lines, a.all))
            .await
    }
}
