//! Offline disk tools on a stopped workspace: list, read and export its ext4 image without
//! booting it. Secondary to the live tools (exec, file ops, export): they exist so a stopped
//! workspace can be inspected in milliseconds without spending a VM.

use super::store::{FileLock, WorkspaceDir};
use crate::{Error, ExecutionMode, Pyro, Result, WorkspaceState};
use pyro_diskimage as diskimage;
use pyro_diskimage::DiskImage;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One entry of [`DiskListResult::entries`].
pub use pyro_diskimage::DiskEntry;

/// Payload of `list_workspace_disk`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DiskListResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// The listed path, normalised to an absolute guest path (absolute paths may point anywhere in
    /// the guest filesystem).
    pub path: String,
    /// Whether subdirectories were listed too.
    pub recursive: bool,
    /// The children of a directory sorted by path (the whole subtree when `recursive`), or one
    /// entry when the path is not a directory. Names that are not plain UTF-8 text are escaped
    /// (`\\`, `\n`, `\xNN`, ...); an escaped path can be passed back as shown.
    pub entries: Vec<DiskEntry>,
}

/// Payload of `read_workspace_disk`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DiskReadResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Absolute guest path read.
    pub path: String,
    /// Full size of the file in bytes.
    pub size_bytes: u64,
    /// The byte limit that was asked for (1 to 16 MiB).
    pub max_bytes: u64,
    /// The first `max_bytes` bytes (less if a UTF-8 character would be split), decoded as UTF-8
    /// with invalid bytes replaced. Not redacted.
    pub content: String,
    /// True when `content` is not the whole file.
    pub truncated: bool,
}

/// Payload of `export_workspace_disk`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DiskExportResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Absolute host path of the new image file (it did not exist before).
    pub output_path: String,
    /// Always `ext4`: a raw ext4 filesystem image, mountable with `mount -o loop`.
    pub disk_format: String,
    /// Size of the image in bytes (its apparent size; holes stay sparse on disk).
    pub bytes_written: u64,
}

impl Pyro {
    /// Preconditions of every offline disk tool, checked in this order (so the error a
    /// caller sees is stable): exists, liveness (a dead VMM means stopped),
    /// stopped (an expired workspace is stopped, so it qualifies), guest-backed, image present.
    ///
    /// Nothing here (or in `diskimage`) writes to the image or runs a tool on it: the runtime-only
    /// paths live on the guest's tmpfs `/run` and never reach the disk, so one found there was made
    /// by the guest itself. `list` and `read` hide it; `export` copies the guest's bytes as they are.
    ///
    /// Returns the shared lifecycle lock with the image: the caller holds it until it has
    /// finished with the image, so no `start` (exclusive) can boot the disk while it is read.
    /// Runs on the blocking pool only (it waits for the lock there).
    fn disk_precheck(&self, workspace_id: &str, op: &str) -> Result<(WorkspaceDir, DiskImage, FileLock)> {
        let dir = self.ws_dir(workspace_id)?;
        let life = dir.lock_lifecycle_shared()?;
        let record = super::refresh_liveness(&dir)?;
        if record.state == WorkspaceState::Paused {
            return Err(Error::InvalidState(format!(
                "workspace '{}' is paused (its guest's memory is saved and its disk may be behind it); stop it first \
                 with `pyro workspace stop {}` (it resumes and shuts down cleanly), then use workspace_disk_{op}",
                dir.id, dir.id
            )));
        }
        if record.state != WorkspaceState::Stopped {
            return Err(Error::InvalidState(format!(
                "workspace '{}' must be stopped before workspace_disk_{op}",
                dir.id
            )));
        }
        if record.execution_mode == ExecutionMode::HostCompat {
            return Err(Error::InvalidState(format!("workspace_disk_{op} is unavailable for host_compat workspaces")));
        }
        let image = dir.disk_path(&record);
        if !image.is_file() {
            return Err(Error::InvalidState(format!(
                "workspace '{}' rootfs image is unavailable at {}",
                dir.id,
                image.display()
            )));
        }
        // The format is the one the host recorded when it made the disk, never guessed from
        // the file's bytes (a guest writes its raw disk's first sector).
        let format = match record.disk_format {
            pyro_vmm::DiskFormat::Raw => diskimage::ImageFormat::Raw,
            pyro_vmm::DiskFormat::Qcow2 => diskimage::ImageFormat::Qcow2,
        };
        Ok((dir, DiskImage::new(image, format), life))
    }

    /// List a stopped workspace's disk (`/workspace` by default; absolute paths anywhere).
    pub async fn list_workspace_disk(&self, workspace_id: &str, path: &str, recursive: bool) -> Result<DiskListResult> {
        let path = pyro_tree::paths::normalize_disk_path(path)?;
        let pyro = self.clone();
        let id = workspace_id.to_string();
        crate::blocking(move || {
            let (dir, image, _life) = pyro.disk_precheck(&id, "list")?;
            let entries = diskimage::list(&image, &path, recursive)?;
            Ok(DiskListResult { workspace_id: dir.id, path, recursive, entries })
        })
        .await
    }

    /// Read up to `max_bytes` (1 to 16 MiB) of a regular file on a stopped workspace's disk.
    /// Costs what `max_bytes` asks, not the file's size.
    pub async fn read_workspace_disk(&self, workspace_id: &str, path: &str, max_bytes: u64) -> Result<DiskReadResult> {
        let path = pyro_tree::paths::normalize_disk_path(path)?;
        diskimage::check_read_limit(max_bytes)?;
        let pyro = self.clone();
        let id = workspace_id.to_string();
        crate::blocking(move || {
            let (dir, image, _life) = pyro.disk_precheck(&id, "read")?;
            let (size, data) = diskimage::read(&image, &path, max_bytes.saturating_add(3))?;
            let (content, cut) = pyro_tree::text::truncate_utf8(&data, max_bytes as usize);
            Ok(DiskReadResult {
                workspace_id: dir.id,
                path,
                size_bytes: size,
                max_bytes,
                content,
                truncated: cut || size > max_bytes,
            })
        })
        .await
    }

    /// Export a stopped workspace's raw ext4 image (sparse, never partial, never overwrites).
    pub async fn export_workspace_disk(&self, workspace_id: &str, output_path: &Path) -> Result<DiskExportResult> {
        // diskimage::export refuses an existing output itself, atomically with the write.
        let output = super::ops::resolve_output(output_path)?;
        let pyro = self.clone();
        let id = workspace_id.to_string();
        // Taken here: a scoped (per-call) sink does not follow the work onto the blocking pool.
        let progress = self.progress();
        crate::blocking(move || {
            let (dir, image, _life) = pyro.disk_precheck(&id, "export")?;
            progress.report("export", format!("copying the stopped disk to {}", output.display()), Some(0.1));
            let bytes = diskimage::export(&image, &output)?;
            progress.report("export", format!("wrote {bytes} bytes"), Some(1.0));
            super::events::record(
                &dir,
                super::events::Event::Export(super::events::ExportEvent {
                    workspace_path: None,
                    output_path: output.display().to_string(),
                    artifact_type: "disk".into(),
                    bytes_written: bytes,
                }),
            );
            Ok(DiskExportResult {
                workspace_id: dir.id,
                output_path: output.display().to_string(),
                disk_format: "ext4".into(),
                bytes_written: bytes,
            })
        })
        .await
    }
}
