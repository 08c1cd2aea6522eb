//! Booting a VM directory: disk overlay, initramfs, launch spec, supervisor. Shared by
//! ephemeral VMs and workspaces; knows nothing about either.

use crate::backend::{self, qemu, BackendChoice, BackendKind};
use crate::config::find_own_binary;
use crate::env::{initramfs_for, InstalledEnvironment};
use crate::supervisor::{self, LaunchSpec, ReadyLine};
use crate::{Error, Result};
use pyro_protocol::{ExecRequest, ExecResult, Request, Response};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a guest may take from VMM start to agent ready. Measured ~1.5 s under TCG;
/// generous because a loaded 2-core CI host can be several times slower.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of one boot.
#[derive(Debug, Clone)]
pub struct BootOptions {
    pub vm_id: String,
    pub vcpu_count: u32,
    pub mem_mib: u32,
    pub network: bool,
    pub owner_pid: Option<u32>,
    pub remove_dir_on_exit: bool,
    /// The VM's root disk (raw ext4) and its format.
    pub disk: PathBuf,
    pub disk_format: &'static str,
    /// Discard every write when the VM ends (ephemeral VMs boot the environment's image
    /// directly this way; QEMU keeps the writes in an unlinked temp overlay).
    pub snapshot: bool,
}

/// The initramfs for this environment and the current agent binary (cached). A cache dir
/// this user cannot write (a shared, root-built environment cache) falls back to
/// `$PYRO_HOME/cache`.
pub fn initramfs(env: &InstalledEnvironment, cache_dir: &Path) -> Result<PathBuf> {
    let agent = find_own_binary(crate::config::GUEST_AGENT_BIN, "PYRO_AGENT_BIN")?;
    match initramfs_for(env, &agent, cache_dir) {
        Ok(p) => Ok(p),
        Err(first) => {
            let fallback = crate::config::Paths::from_env().map(|p| p.home.join("cache"));
            match fallback {
                Ok(dir) if dir != cache_dir => initramfs_for(env, &agent, &dir).map_err(|_| first),
                _ => Err(first),
            }
        }
    }
}

/// Pick the backend for a VM of this environment (runs the cached KVM probe if needed).
pub fn choose_backend(
    env: Option<&InstalledEnvironment>,
    cache_dir: &Path,
    allow_host_compat: bool,
) -> Result<BackendChoice> {
    let forced = match std::env::var("PYRO_BACKEND") {
        Ok(v) if !v.trim().is_empty() => Some(BackendKind::parse(&v)?),
        _ => None,
    };
    let build_initrd = || match env {
        Some(e) => initramfs(e, cache_dir),
        None => Err(Error::Environment("no environment to build a probe initramfs from".into())),
    };
    let probe_guest = env.map(|e| backend::ProbeGuest {
        kernel: &e.kernel_image,
        kernel_release: &e.kernel_release,
        initramfs: &build_initrd,
    });
    backend::select(&backend::SelectInput { forced, allow_host_compat, cache_dir, probe_guest })
}

/// Boot the VM in `vm_dir` (disk already created) under QEMU and wait for its agent.
pub async fn boot_qemu(
    env: &InstalledEnvironment,
    cache_dir: &Path,
    vm_dir: &Path,
    accel: qemu::Accel,
    opts: &BootOptions,
) -> Result<ReadyLine> {
    let qemu_bin = backend::qemu_binary().ok_or_else(|| {
        Error::HostRequirement("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into())
    })?;
    // sun_path holds 108 bytes: a deeper state dir would fail later with an opaque bind error.
    let longest = vm_dir.join(supervisor::SOCKET_FILE);
    if longest.as_os_str().len() > 107 {
        return Err(Error::HostRequirement(format!(
            "the state directory is too deep for Unix sockets ({} is over 107 bytes); set PYRO_HOME to a shorter path",
            longest.display()
        )));
    }
    // `egress` means the internet, never this host: without a kernel that can filter QEMU's
    // connections (crate::netfilter) a networked VM does not start.
    let allow_private_network = if opts.network {
        crate::netfilter::available().map_err(Error::HostRequirement)?;
        crate::netfilter::allow_private_from_env().map_err(Error::InvalidInput)?
    } else {
        false
    };
    let initrd = initramfs(env, cache_dir)?;
    let disk = &opts.disk;
    let agent_socket = vm_dir.join(supervisor::AGENT_SOCKET);
    let qmp_socket = vm_dir.join(supervisor::QMP_SOCKET);
    let launch = qemu::QemuLaunch {
        accel,
        vcpu_count: opts.vcpu_count,
        mem_mib: opts.mem_mib,
        kernel: &env.kernel_image,
        initramfs: &initrd,
        disk,
        disk_format: opts.disk_format,
        snapshot: opts.snapshot,
        agent_socket: &agent_socket,
        qmp_socket: &qmp_socket,
        network: opts.network,
        tsc_khz: qemu::host_tsc_khz(),
    };
    let spec = LaunchSpec {
        vm_id: opts.vm_id.clone(),
        vmm_bin: qemu_bin,
        vmm_args: qemu::qemu_args(&launch),
        backend: "qemu".into(),
        accel: accel.as_str().into(),
        boot_timeout_ms: BOOT_TIMEOUT.as_millis() as u64,
        owner_pid: opts.owner_pid,
        remove_dir_on_exit: opts.remove_dir_on_exit,
        network: opts.network,
        allow_private_network,
    };
    crate::util::write_atomic(
        &vm_dir.join(supervisor::LAUNCH_FILE),
        serde_json::to_vec_pretty(&spec).expect("launch spec serializes").as_slice(),
    )
    .map_err(|e| Error::io("writing launch.json", e))?;
    let supervisor_bin = find_own_binary("pyro-supervisor", "PYRO_SUPERVISOR_BIN")?;
    let ready = supervisor::spawn(&supervisor_bin, vm_dir, BOOT_TIMEOUT + Duration::from_secs(5)).await?;
    if opts.network {
        configure_user_network(vm_dir).await?;
    }
    Ok(ready)
}

/// QEMU user-mode networking: fixed addressing (10.0.2.15/24, gateway .2, DNS .3).
pub const USER_NET_GUEST_IP: &str = "10.0.2.15";
pub const USER_NET_GATEWAY: &str = "10.0.2.2";
pub const USER_NET_DNS: &str = "10.0.2.3";

async fn configure_user_network(vm_dir: &Path) -> Result<()> {
    let script = format!(
        "set -e; ip link set eth0 up; ip addr add {USER_NET_GUEST_IP}/24 dev eth0; \
         ip route add default via {USER_NET_GATEWAY}; echo 'nameserver {USER_NET_DNS}' > /etc/resolv.conf"
    );
    let r = exec(vm_dir, &script, None, Duration::from_secs(20), 64 * 1024).await?;
    if r.exit_code != 0 {
        return Err(Error::Boot(format!(
            "configuring the guest network failed: {}",
            String::from_utf8_lossy(&r.stderr).trim()
        )));
    }
    Ok(())
}

/// Run a command in the guest through the supervisor.
pub async fn exec(
    vm_dir: &Path,
    command: &str,
    cwd: Option<&str>,
    timeout: Duration,
    output_cap_bytes: u64,
) -> Result<ExecResult> {
    exec_with_env(vm_dir, command, cwd, Default::default(), timeout, output_cap_bytes).await
}

/// [`exec`] with extra environment variables for this one command.
pub async fn exec_with_env(
    vm_dir: &Path,
    command: &str,
    cwd: Option<&str>,
    env: std::collections::BTreeMap<String, String>,
    timeout: Duration,
    output_cap_bytes: u64,
) -> Result<ExecResult> {
    let req = Request::Exec(ExecRequest {
        command: command.to_string(),
        cwd: cwd.map(str::to_string),
        env,
        timeout_ms: timeout.as_millis() as u64,
        output_cap_bytes,
    });
    // The agent enforces the command timeout; the host waits longer so a slow answer is
    // never mistaken for a dead guest.
    match supervisor::call(vm_dir, req, Some(timeout + Duration::from_secs(15))).await? {
        Response::Exec(mut r) => {
            cap_exec_output(&mut r, output_cap_bytes);
            Ok(r)
        }
        Response::Error(e) => Err(Error::Guest(format!("guest exec failed: {}", e.message))),
        other => Err(Error::Guest(format!("unexpected answer to exec: {other:?}"))),
    }
}

/// Re-apply the output cap to an exec answer on the host: the agent is asked to cap each
/// stream, but a hostile one may send more. Each of stdout and stderr is cut to
/// `min(requested_cap, 16 MiB)` bytes and its `*_truncated` flag set when anything was cut;
/// a flag the agent set stays set.
pub fn cap_exec_output(r: &mut ExecResult, requested_cap: u64) {
    let cap = requested_cap.min(pyro_protocol::DEFAULT_OUTPUT_CAP_BYTES) as usize;
    for (stream, truncated) in [(&mut r.stdout, &mut r.stdout_truncated), (&mut r.stderr, &mut r.stderr_truncated)] {
        if stream.len() > cap {
            stream.truncate(cap);
            stream.shrink_to_fit();
            *truncated = true;
        }
    }
}

#[cfg(test)]
mod exec_cap_tests {
    use super::*;

    fn answer(stdout: usize, stderr: usize) -> ExecResult {
        ExecResult {
            stdout: vec![b'o'; stdout],
            stderr: vec![b'e'; stderr],
            stdout_truncated: false,
            stderr_truncated: false,
            exit_code: 0,
            timed_out: false,
            duration_ms: 1,
        }
    }

    #[test]
    fn oversized_streams_are_cut_to_the_requested_cap_and_flagged() {
        let mut r = answer(100, 10);
        cap_exec_output(&mut r, 64);
        assert_eq!((r.stdout.len(), r.stdout_truncated), (64, true));
        assert_eq!((r.stderr.len(), r.stderr_truncated), (10, false));
        let mut r = answer(10, 65);
        cap_exec_output(&mut r, 64);
        assert_eq!((r.stdout.len(), r.stdout_truncated), (10, false));
        assert_eq!((r.stderr.len(), r.stderr_truncated), (64, true));
    }

    #[test]
    fn the_cap_never_exceeds_16_mib_whatever_was_asked() {
        let max = pyro_protocol::DEFAULT_OUTPUT_CAP_BYTES as usize;
        let mut r = answer(max + 1, max);
        cap_exec_output(&mut r, u64::MAX);
        assert_eq!((r.stdout.len(), r.stdout_truncated), (max, true));
        assert_eq!((r.stderr.len(), r.stderr_truncated), (max, false));
    }

    #[test]
    fn output_at_the_cap_is_untouched_and_agent_flags_are_kept() {
        let mut r = answer(64, 0);
        r.stderr_truncated = true;
        cap_exec_output(&mut r, 64);
        assert_eq!((r.stdout.len(), r.stdout_truncated), (64, false));
        assert!(r.stderr_truncated);
    }
}

/// Flush every guest filesystem (`sync(2)` in the guest; each flush reaches the image file
/// through virtio-blk FLUSH, which QEMU turns into an fdatasync). Bounded by the filesystem
/// request timeout: a guest with gigabytes of dirty data under TCG needs a while.
pub async fn sync_guest(vm_dir: &Path) -> Result<()> {
    match supervisor::call(vm_dir, Request::Sync, Some(FS_TIMEOUT)).await? {
        Response::Ok => Ok(()),
        Response::Error(e) => Err(Error::Guest(format!("guest sync failed: {}", e.message))),
        other => Err(Error::Guest(format!("unexpected answer to sync: {other:?}"))),
    }
}

/// Stop the VM: clean guest shutdown bounded by `timeout` (zero = kill at once), then make
/// sure nothing of it runs.
pub async fn shutdown(vm_dir: &Path, timeout: Duration) -> Result<()> {
    if supervisor::is_running(vm_dir) {
        let req =
            Request::Supervisor(pyro_protocol::SupervisorRequest::Shutdown { timeout_ms: timeout.as_millis() as u64 });
        let _ = supervisor::call(vm_dir, req, Some(timeout + Duration::from_secs(10))).await;
        // Wait briefly for the supervisor to exit by itself before forcing it.
        for _ in 0..100 {
            if !supervisor::is_running(vm_dir) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    supervisor::kill_from_pid_file(vm_dir);
    supervisor::clean_stale_files(vm_dir);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Guest filesystem operations (workspaces).
// ---------------------------------------------------------------------------------------

use pyro_protocol::fs::{FileEntry, FsRequest, FsResponse, TRANSFER_CHUNK_BYTES};

/// Timeout for one filesystem request; archive work on a big tree can take a while under TCG.
const FS_TIMEOUT: Duration = Duration::from_secs(120);

async fn fs_call(vm_dir: &Path, req: FsRequest) -> Result<FsResponse> {
    match supervisor::call(vm_dir, Request::Fs(req), Some(FS_TIMEOUT)).await? {
        Response::Fs(r) => Ok(r),
        Response::Ok => Ok(FsResponse::Data { data: Vec::new() }),
        Response::Error(e) => Err(guest_error(&e)),
        other => Err(Error::Guest(format!("unexpected answer from the guest: {other:?}"))),
    }
}

/// Map the agent's error kinds to the engine's error classes, message unchanged.
fn guest_error(e: &pyro_protocol::ErrorInfo) -> Error {
    match e.kind.as_str() {
        "not_found" => Error::NotFound(e.message.clone()),
        "invalid_path" | "unsupported_type" | "too_large" | "bad_request" | "exists" => {
            Error::InvalidInput(e.message.clone())
        }
        "invalid_state" => Error::InvalidState(e.message.clone()),
        _ => Error::Guest(e.message.clone()),
    }
}

/// Upload a plain tar and extract it under `destination` in the guest.
pub async fn push_archive(vm_dir: &Path, tar: &[u8], destination: &str) -> Result<(u64, u64)> {
    push_archive_from(vm_dir, tar, destination).await
}

/// [`push_archive`] from a stream (a snapshot or spooled archive on disk): at most
/// [`TRANSFER_PIPELINE_DEPTH`] chunks in memory at a time, whatever the archive's size.
pub async fn push_archive_from<R: std::io::Read>(vm_dir: &Path, mut tar: R, destination: &str) -> Result<(u64, u64)> {
    use futures::stream::{FuturesOrdered, StreamExt};
    let transfer_id = crate::util::new_id();
    let mut offset = 0u64;
    let mut chunk = vec![0u8; TRANSFER_CHUNK_BYTES];
    // Chunks after the first are sent while earlier ones are still on their way or being
    // written in the guest (the agent writes each at its offset). The first one creates the
    // upload, so it is acknowledged before any other is sent.
    let mut in_flight = FuturesOrdered::new();
    // An empty archive still needs its (empty) upload file to exist.
    loop {
        let mut filled = 0;
        while filled < chunk.len() {
            match tar.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading the archive to upload", e)),
            }
        }
        if filled == 0 && offset > 0 {
            break;
        }
        let data = chunk[..filled].to_vec();
        let upload = fs_call(vm_dir, FsRequest::UploadChunk { transfer_id: transfer_id.clone(), offset, data });
        if offset == 0 {
            upload.await?;
        } else {
            in_flight.push_back(upload);
            if in_flight.len() >= TRANSFER_PIPELINE_DEPTH {
                in_flight.next().await.expect("a chunk is in flight")?;
            }
        }
        offset += filled as u64;
        if filled < chunk.len() {
            break;
        }
    }
    while let Some(done) = in_flight.next().await {
        done?;
    }
    match fs_call(vm_dir, FsRequest::ExtractUpload { transfer_id, destination: destination.to_string() }).await? {
        FsResponse::Extracted { entry_count, bytes_written, .. } => Ok((entry_count, bytes_written)),
        other => Err(Error::Guest(format!("unexpected answer to extract: {other:?}"))),
    }
}

/// Transfer chunks in flight at once (upload and download): the channel, the supervisor
/// and the agent's disk work overlap instead of taking turns.
pub const TRANSFER_PIPELINE_DEPTH: usize = 3;

/// Largest archive the host pulls from a guest (export, diff, snapshot). The guest declares
/// the size; anything larger is refused before a byte is read.
pub const MAX_PULLED_ARCHIVE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// What the guest exported, spooled to a temporary file (removed on drop) and rewound.
#[derive(Debug)]
pub struct Exported {
    pub file: tempfile::NamedTempFile,
    pub size: u64,
    pub artifact_type: String,
    pub entry_count: u64,
    pub bytes_written: u64,
}

/// Tar up `path` in the guest and bring it to a temporary file in `spool_dir` on the host.
///
/// The guest is hostile: the size it declares is checked against
/// [`MAX_PULLED_ARCHIVE_BYTES`] before anything is read, every chunk must be no longer than
/// the range asked for, and the archive goes to disk in chunks, never whole into memory.
pub async fn pull_archive(vm_dir: &Path, path: &str, spool_dir: &Path) -> Result<Exported> {
    use std::io::{Seek, Write};
    let (transfer_id, size, artifact_type, entry_count, bytes_written) =
        match fs_call(vm_dir, FsRequest::Export { path: path.to_string() }).await? {
            FsResponse::Exported { transfer_id, size, artifact_type, entry_count, bytes_written } => {
                (transfer_id, size, artifact_type, entry_count, bytes_written)
            }
            other => return Err(Error::Guest(format!("unexpected answer to export: {other:?}"))),
        };
    let read = async {
        if size > MAX_PULLED_ARCHIVE_BYTES {
            return Err(Error::InvalidInput(format!(
                "the guest's archive of {path} is {size} bytes; pyro brings at most {MAX_PULLED_ARCHIVE_BYTES} bytes \
                 out of a guest at once (export a smaller path)"
            )));
        }
        let spool = |e| Error::io(format!("spooling the guest archive in {}", spool_dir.display()), e);
        let mut file = tempfile::Builder::new().prefix(".pyro-pull-").tempfile_in(spool_dir).map_err(spool)?;
        // Several ranges in flight (TRANSFER_PIPELINE_DEPTH), written in order; each answer
        // must be exactly the range asked for.
        use futures::stream::StreamExt;
        let ranges = (0..size).step_by(TRANSFER_CHUNK_BYTES).map(|offset| {
            let len = (size - offset).min(TRANSFER_CHUNK_BYTES as u64);
            let req = FsRequest::ReadTransfer { transfer_id: transfer_id.clone(), offset, len };
            async move { (len, fs_call(vm_dir, req).await) }
        });
        let mut reads = futures::stream::iter(ranges).buffered(TRANSFER_PIPELINE_DEPTH);
        while let Some((len, answer)) = reads.next().await {
            match answer? {
                FsResponse::Data { data } if data.len() as u64 == len => file.write_all(&data).map_err(spool)?,
                FsResponse::Data { data } if data.len() as u64 > len => {
                    return Err(Error::Guest(format!(
                        "the guest answered a read of {len} bytes with {} bytes; export refused",
                        data.len()
                    )))
                }
                _ => return Err(Error::Guest("the guest export ended early".into())),
            }
        }
        file.flush().map_err(spool)?;
        file.as_file_mut().rewind().map_err(spool)?;
        Ok(file)
    }
    .await;
    let _ = fs_call(vm_dir, FsRequest::DiscardTransfer { transfer_id }).await;
    Ok(Exported { file: read?, size, artifact_type, entry_count, bytes_written })
}

pub async fn list_files(vm_dir: &Path, path: &str, recursive: bool) -> Result<(String, Vec<FileEntry>)> {
    match fs_call(vm_dir, FsRequest::List { path: path.to_string(), recursive }).await? {
        FsResponse::Listing { artifact_type, entries, .. } => Ok((artifact_type, entries)),
        other => Err(Error::Guest(format!("unexpected answer to list: {other:?}"))),
    }
}

/// (size_bytes, first `max_bytes` bytes) of a regular file.
pub async fn read_file(vm_dir: &Path, path: &str, max_bytes: u64) -> Result<(u64, Vec<u8>)> {
    match fs_call(vm_dir, FsRequest::Read { path: path.to_string(), max_bytes }).await? {
        FsResponse::FileData { size_bytes, data, .. } => Ok((size_bytes, data)),
        other => Err(Error::Guest(format!("unexpected answer to read: {other:?}"))),
    }
}

pub async fn write_file(vm_dir: &Path, path: &str, data: Vec<u8>) -> Result<(u64, u64)> {
    match fs_call(vm_dir, FsRequest::Write { path: path.to_string(), data }).await? {
        FsResponse::Written { size_bytes, bytes_written, .. } => Ok((size_bytes, bytes_written)),
        other => Err(Error::Guest(format!("unexpected answer to write: {other:?}"))),
    }
}

pub async fn delete_path(vm_dir: &Path, path: &str) -> Result<()> {
    fs_call(vm_dir, FsRequest::Delete { path: path.to_string() }).await.map(|_| ())
}

/// Give a workspace its own raw copy of the environment's rootfs: reflinked where the host
/// filesystem shares blocks (instant), otherwise a sparse copy (only allocated blocks are
/// written: ~0.3 s for a 2 GiB image holding ~400 MB). Returns the clone mode used.
pub fn clone_disk(env: &InstalledEnvironment, dest: &Path) -> Result<&'static str> {
    let tmp = dest.with_extension("ext4.partial");
    let reflinked = std::process::Command::new("cp")
        .args(["--reflink=always", "--"])
        .arg(&env.rootfs_image)
        .arg(&tmp)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let mode = if reflinked {
        "reflink"
    } else {
        let out = std::process::Command::new("cp")
            .args(["--sparse=always", "--"])
            .arg(&env.rootfs_image)
            .arg(&tmp)
            .output()
            .map_err(|e| Error::io("running cp", e))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Io(format!(
                "copying the environment disk to {} failed: {}",
                dest.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        "sparse_copy"
    };
    // `cp` gives the copy the environment image's mode (world-readable in a shared cache);
    // a VM's own disk holds the user's work: owner only.
    crate::util::make_private(&tmp).map_err(|e| Error::io(format!("securing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(format!("placing {}", dest.display()), e))?;
    Ok(mode)
}

/// Replace the guest's `/run/pyro-secrets` contents (tmpfs; never on the disk image).
pub async fn install_secrets(vm_dir: &Path, secrets: Vec<pyro_protocol::fs::SecretFile>) -> Result<()> {
    fs_call(vm_dir, FsRequest::InstallSecrets { secrets }).await.map(|_| ())
}

// ---------------------------------------------------------------------------------------
// Shells and services.
// ---------------------------------------------------------------------------------------

use pyro_protocol::session::{ServiceRequest, ServiceResponse, ShellRequest, ShellResponse};

/// One shell request; `timeout` bounds the whole round trip (idle waits included).
pub async fn shell_call(vm_dir: &Path, req: ShellRequest, timeout: Duration) -> Result<ShellResponse> {
    match supervisor::call(vm_dir, Request::Shell(req), Some(timeout)).await? {
        Response::Shell(r) => Ok(r),
        Response::Error(e) => Err(guest_error(&e)),
        other => Err(Error::Guest(format!("unexpected answer from the guest: {other:?}"))),
    }
}

/// One service request; `timeout` bounds the whole round trip (readiness waits included).
pub async fn service_call(vm_dir: &Path, req: ServiceRequest, timeout: Duration) -> Result<ServiceResponse> {
    match supervisor::call(vm_dir, Request::Service(req), Some(timeout)).await? {
        Response::Service(r) => Ok(r),
        Response::Error(e) => Err(guest_error(&e)),
        other => Err(Error::Guest(format!("unexpected answer from the guest: {other:?}"))),
    }
}
