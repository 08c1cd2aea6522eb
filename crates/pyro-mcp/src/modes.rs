//! Modes: task-shaped tool sets (`pyro mcp serve --mode NAME`). A mode is smaller than a
//! profile, its tools carry descriptions written for the task, and its input schemas are
//! narrower (parameters a task does not need are dropped from the schema, and a call that
//! passes one anyway is refused).
//!
//! How a mode combines with a profile: the mode decides the tool set. `--mode` alone serves
//! the mode; `--mode` with `--profile` is accepted only when every tool of the mode is in that
//! profile (the mode then applies as if alone), and refused otherwise, naming the profiles
//! that fit. `workspace_create`/`workspace_exec` in a mode are the `workspace-core` variants
//! (no network policy, secrets or secret_env).

use crate::Profile;

/// A task-shaped tool set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reproduce a failure and fix it: create a workspace (seeded from the project), run the
    /// failing command, read and change files, check the diff, reset and retry.
    ReproFix,
    /// Look at existing workspaces without changing them: every tool is read-only.
    Inspect,
    /// Get a project from nothing to running: pick an environment, create a workspace, push
    /// files, run setup and build commands, check status. No diff or patch tools (there is
    /// nothing to compare yet).
    ColdStart,
    /// Review and evaluate finished work: the summary, the diff, the logs, reading files,
    /// running the checks, exporting the result.
    ReviewEval,
}

/// Parameters every mode drops: running commands on the host is the operator's choice
/// (profiles keep it, refused unless `--allow-host-compat`), and labels are bookkeeping no
/// task here needs.
const DROPPED_EVERYWHERE: &[&str] = &["allow_host_compat", "labels"];

/// Per-mode tools: `(name, description)`. A `None` description keeps the tool's own.
type ToolSpec = (&'static str, Option<&'static str>);

const REPRO_FIX: &[ToolSpec] = &[
    ("workspace_create", Some("Create the workspace to reproduce the problem in: a microVM whose /workspace is seeded from `seed_path` (a host directory or archive), which also becomes the baseline that workspace_diff and workspace_reset compare with and return to. Returns the workspace_id every other tool takes. Use `debian:12-build` for compilers and build tools.")),
    ("workspace_exec", Some("Run a command in /workspace (`/bin/sh -lc`): first to reproduce the failure (e.g. the failing test), then to check the fix. Returns stdout, stderr and exit_code (124 on timeout); every run is kept in the history that workspace_summary reports.")),
    ("workspace_file_list", Some("List a directory of /workspace (recursively with `recursive`) to find the code involved in the failure.")),
    ("workspace_file_read", Some("Read a file of /workspace (up to `max_bytes`) to understand the failure before changing anything.")),
    ("workspace_file_write", Some("Write a whole text file in /workspace (creates or replaces it). For small edits to existing files prefer workspace_patch_apply.")),
    ("workspace_patch_apply", Some("Apply a unified diff to /workspace: the usual way to make the fix. All-or-nothing: a patch that does not apply changes nothing.")),
    ("workspace_diff", Some("The fix so far: /workspace against the baseline, as a unified patch with per-file status. Use it to check the change is what you meant before reporting it.")),
    ("workspace_summary", Some("Everything done since the workspace was created or reset, in one call: patches, file writes, commands with exit codes and durations, and the diff stat. Use it to report the reproduction and the fix.")),
    ("workspace_reset", Some("Throw away every change and start over from the baseline (or a named snapshot): /workspace is restored and the history cleared. Use it when an attempt went wrong.")),
    ("workspace_logs", Some("The full command history with outputs, oldest first, since the creation or last reset.")),
    ("workspace_status", None),
    ("workspace_export", Some("Copy a fixed file or directory out of /workspace to a new path on the host (never overwrites).")),
    ("workspace_delete", Some("Delete the workspace when the fix is reported (or abandoned): its VM, disk, history and snapshots.")),    ("workspace_command_status", Some("Whether a background command (workspace_exec with `background: true`, for a long test suite or build) still runs, and its exit code once it ended.")),
    ("workspace_command_read", Some("Read a background command's output from `cursor` on (pass back `next_cursor`), while it runs or after: watch a long test run without holding a tool call open.")),
    ("workspace_command_wait", Some("Wait up to `timeout_seconds` for a background command to end; it is never killed by the wait. Call again to keep waiting.")),
    ("workspace_command_kill", Some("Kill a background command (its whole process group), e.g. a hung test run; it lands in the history as killed.")),
];

const INSPECT: &[ToolSpec] = &[
    ("workspace_list", Some("List the workspaces on this host (any state) with id, name, labels, state and expiry. Read-only.")),
    ("workspace_status", Some("A workspace's state, limits, seed, command count and last command. Read-only.")),
    ("workspace_summary", Some("What happened in a workspace since its creation or last reset: syncs, file writes, patches, exports, services, snapshots, commands with exit codes, and the diff stat. Read-only.")),
    ("workspace_diff", Some("/workspace against its baseline: per-file status and the unified patch. Read-only.")),
    ("workspace_logs", Some("The command history with outputs, oldest first. Read-only.")),
    ("workspace_file_list", Some("List a directory of a running workspace's /workspace. Read-only (a paused workspace is resumed to answer).")),
    ("workspace_file_read", Some("Read a file of a running workspace's /workspace, up to `max_bytes`. Read-only (a paused workspace is resumed to answer).")),
    ("workspace_disk_list", Some("List a path on a stopped workspace's disk (any path, not only /workspace), without booting it. Read-only.")),
    ("workspace_disk_read", Some("Read a file from a stopped workspace's disk without booting it. Read-only.")),
    ("snapshot_list", Some("A workspace's snapshots: baseline first, then named ones newest first. Read-only.")),
    ("service_list", Some("A workspace's services with their state and published ports. Read-only.")),
    ("service_status", Some("One service's state, exit code and readiness. Read-only.")),
    ("service_logs", Some("A service's stdout and stderr (the last `tail_lines` lines, or all kept). Read-only.")),
];

const COLD_START: &[ToolSpec] = &[
    ("vm_list_environments", Some("The environments a workspace can start from (debian:12, debian:12-base, debian:12-build) with their packages and whether each is installed here. Start here to pick one.")),
    ("vm_run", Some("Run one command in a throwaway VM (nothing is kept): a quick check that an environment has what the project needs before creating a workspace.")),
    ("workspace_create", Some("Create the project's workspace: a microVM whose /workspace is seeded from `seed_path` (a host directory or archive). The first create of an environment installs it (slow; progress is reported). Returns the workspace_id.")),
    ("workspace_sync_push", Some("Copy more host files (a directory or archive) into /workspace, e.g. configuration the seed did not include. Overwrites, never deletes.")),
    ("workspace_exec", Some("Run a setup or build step in /workspace (`/bin/sh -lc`): install dependencies, configure, build, run a smoke test. Returns stdout, stderr and exit_code; raise `timeout_seconds` for long builds.")),
    ("workspace_file_list", Some("List /workspace to see what the seed brought in (recursively with `recursive`).")),
    ("workspace_file_read", Some("Read a file of /workspace, e.g. a README or a build script, to learn how the project is set up.")),
    ("workspace_logs", Some("The setup commands run so far with their outputs and exit codes.")),
    ("workspace_status", Some("Whether the workspace is running, when it expires, and the last command's exit code.")),
    ("workspace_list", None),
    ("workspace_delete", Some("Delete a workspace that is no longer needed (its VM, disk and history).")),    ("workspace_command_status", Some("Whether a long setup step started in the background (workspace_exec with `background: true`) still runs, and its exit code once done.")),
    ("workspace_command_read", Some("Read a background setup step's output (dependency install, build) from `cursor` on; pass back `next_cursor`.")),
    ("workspace_command_wait", Some("Wait up to `timeout_seconds` for a background setup step to finish, without killing it; call again to keep waiting.")),
    ("workspace_command_kill", Some("Stop a background setup step that hangs or is no longer needed (its whole process group).")),
];

const REVIEW_EVAL: &[ToolSpec] = &[
    ("workspace_list", Some("The workspaces on this host: find the one to review by name or labels.")),
    ("workspace_summary", Some("Start every review here: since the creation or last reset, the syncs, file writes, patches, exports, services and snapshots, every command with its exit code and duration, and the diff stat (files and lines changed).")),
    ("workspace_diff", Some("The change under review: /workspace against its baseline, per-file status and the full unified patch.")),
    ("workspace_logs", Some("The commands that were run with their full outputs, to check what the summary's exit codes stand for.")),
    ("workspace_file_list", Some("List /workspace to look beyond the diff (new files, build outputs).")),
    ("workspace_file_read", Some("Read a file of /workspace to review it in full.")),
    ("workspace_exec", Some("Run the checks that evaluate the work (tests, linters, a build) in /workspace. Note that commands can change the workspace; the summary and diff show what they changed.")),
    ("workspace_export", Some("Copy the reviewed result (a file or directory of /workspace) to a new host path, to keep or merge it. Never overwrites.")),
    ("workspace_status", None),
];

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 4] = [Mode::ColdStart, Mode::Inspect, Mode::ReproFix, Mode::ReviewEval];

    /// The mode's name as `pyro mcp serve --mode` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReproFix => "repro-fix",
            Mode::Inspect => "inspect",
            Mode::ColdStart => "cold-start",
            Mode::ReviewEval => "review-eval",
        }
    }

    /// Parse a mode name; the error names every mode.
    pub fn parse(name: &str) -> Result<Mode, String> {
        Mode::ALL.into_iter().find(|m| m.as_str() == name).ok_or_else(|| {
            format!("unknown MCP mode '{name}'; expected one of: cold-start, inspect, repro-fix, review-eval")
        })
    }

    fn specs(self) -> &'static [ToolSpec] {
        match self {
            Mode::ReproFix => REPRO_FIX,
            Mode::Inspect => INSPECT,
            Mode::ColdStart => COLD_START,
            Mode::ReviewEval => REVIEW_EVAL,
        }
    }

    /// The mode's tool names, sorted.
    pub fn tool_names(self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.specs().iter().map(|s| s.0).collect();
        v.sort_unstable();
        v
    }

    /// The mode's description of a tool, when it has its own.
    pub(crate) fn description(self, tool: &str) -> Option<&'static str> {
        self.specs().iter().find(|s| s.0 == tool).and_then(|s| s.1)
    }

    /// Parameters this mode drops from a tool's schema (and refuses in a call).
    pub(crate) fn dropped_params(self, _tool: &str) -> &'static [&'static str] {
        DROPPED_EVERYWHERE
    }

    /// What the mode is for (the server's instructions to the client).
    pub fn instructions(self) -> &'static str {
        match self {
            Mode::ReproFix => "pyro, repro-fix mode: reproduce a failure in an isolated Linux microVM workspace and fix it. Create a workspace (seeded from the project), run the failing command with workspace_exec, read files, fix with workspace_patch_apply, rerun, check workspace_diff, report with workspace_summary; workspace_reset starts over. Host paths are on the machine running this server.",
            Mode::Inspect => "pyro, inspect mode: look at existing workspaces without changing them. Every tool is read-only: list and status, the summary, diff and logs, files of running workspaces, the disk of stopped ones, snapshots and services.",
            Mode::ColdStart => "pyro, cold-start mode: get a project from nothing to running in an isolated Linux microVM workspace. Pick an environment (vm_list_environments), create a workspace seeded from the project, then install, build and smoke-test with workspace_exec. Host paths are on the machine running this server.",
            Mode::ReviewEval => "pyro, review-eval mode: review and evaluate work done in a workspace. Start with workspace_summary, read workspace_diff and workspace_logs, run the checks with workspace_exec, and export the result with workspace_export.",
        }
    }

    /// The profiles that hold every tool of this mode (those `--profile` may name with it).
    pub fn compatible_profiles(self) -> Vec<Profile> {
        Profile::ALL.into_iter().filter(|p| self.tool_names().iter().all(|t| p.tool_names().contains(t))).collect()
    }

    /// Check `--mode` together with `--profile`: the mode's tools must all be in the profile.
    pub fn check_profile(self, profile: Profile) -> Result<(), String> {
        let fits = self.compatible_profiles();
        if fits.contains(&profile) {
            return Ok(());
        }
        let missing: Vec<&str> = self.tool_names().into_iter().filter(|t| !profile.tool_names().contains(t)).collect();
        Err(format!(
            "--mode {} does not fit --profile {}: the profile lacks {}; use --profile {} or leave --profile out (the mode decides the tools)",
            self.as_str(),
            profile.as_str(),
            missing.join(", "),
            fits.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(" or ")
        ))
    }
}
