//! [`Machine`]: the handle the product holds for one VM. It boots a VM from a [`BootSpec`]
//! (launch spec + supervisor), attaches to a running one by its [`VmDir`], and carries
//! every guest RPC (exec, filesystem, shells, services, published ports) through the VM's
//! supervisor. Guest errors are mapped in one place, [`guest_error`].

use crate::backend::{self, qemu, Accel, Backend};
use crate::supervisor::{client, LaunchSpec};
use crate::{Error, MemoryState, NetworkPolicy, Paused, Result, VmDir};
use pyro_protocol::fs::{FileEntry, FsRequest, FsResponse, SecretFile, TRANSFER_CHUNK_BYTES};
use pyro_protocol::session::{ServiceRequest, ServiceResponse, ShellRequest, ShellResponse};
use pyro_protocol::{ErrorInfo, ExecRequest, ExecResult, PortForward, Request, Response, SupervisorRequest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a guest may take from VMM start to agent ready. Measured ~1.5 s under TCG;
/// generous because a loaded 2-core CI host can be several times slower.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Timeout for one filesystem request; archive work on a big tree can take a while under TCG.
const FS_TIMEOUT: Duration = Duration::from_secs(120);

/// How long saving a state may take once the guest is quiet: 1 GiB of touched memory takes
/// a few seconds here; a loaded host or slow disk many times that.
const PAUSE_SAVE_TIMEOUT: Duration = Duration::from_secs(600);

/// Timeout for a publish or unpublish (each rule is one QMP session, bounded at 10 s).
const PORTS_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest archive the host pulls from a guest (export, diff, snapshot). The guest declares
/// Transfer chunks in flight at once (upload and download): the channel, the supervisor and
/// the agent's disk work overlap instead of taking turns.
pub const TRANSFER_PIPELINE_DEPTH: usize = 3;

/// the size; anything larger is refused before a byte is read.
pub const MAX_PULLED_ARCHIVE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Everything one boot needs, resolved by the caller (environment, initramfs, backend
/// choice are product decisions; this crate only launches).
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// The VM directory (created if missing).
    pub dir: VmDir,
    /// Id of the VM (workspace or ephemeral VM id), for logs.
    pub vm_id: String,
    /// How QEMU runs guest code.
    pub accel: Accel,
    /// Virtual CPUs.
    pub vcpu_count: u32,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Network interface, egress and published ports.
    pub network: NetworkPolicy,
    /// The guest kernel.
    pub kernel: PathBuf,
    /// The initramfs (with the guest agent in it).
    pub initramfs: PathBuf,
    /// The root disk (a raw ext4 image or a qcow2 overlay, see `disk_format`).
    pub disk: PathBuf,
    /// How `disk` is laid out, as recorded when it was made (never probed).
    pub disk_format: crate::DiskFormat,
    /// Discard every write when the VM ends (ephemeral VMs boot the environment's image
    /// directly this way; QEMU keeps the writes in an unlinked temp overlay).
    pub snapshot: bool,
    /// Ephemeral VMs die with the process that owns them (a killed `pyro run` leaves nothing).
    pub owner_pid: Option<u32>,
    /// Remove the whole VM directory when the VM ends (ephemeral VMs).
    pub remove_dir_on_exit: bool,
    /// The `pyro-supervisor` binary to run.
    pub supervisor_bin: PathBuf,
    /// Pause the VM by itself after this much idle time (the supervisor does it).
    pub idle_pause: Option<crate::IdlePause>,
    /// The guest's hostname; applied through the agent (boot and restore alike).
    pub hostname: Option<String>,
}

/// What a boot reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booted {
    /// The supervisor's pid.
    pub supervisor_pid: u32,
    /// QEMU's pid.
    pub vmm_pid: u32,
    /// Supervisor start to agent ready, in milliseconds.
    pub ready_ms: u64,
    /// Version the guest agent reported.
    pub agent_version: String,
    /// The agent channel's transport (`virtio-serial`).
    pub transport: &'static str,
    /// The VM came from a memory state ([`Machine::restore`]), not a cold boot.
    pub restored: bool,
}

/// The transport between host and guest agent: a virtio-serial port (QEMU chardev socket).
pub const AGENT_TRANSPORT: &str = "virtio-serial";

/// Where a guest archive was spooled on the host, and what the guest said about it.
#[derive(Debug)]
pub struct Exported {
    /// The spooled archive (removed on drop), rewound.
    pub file: tempfile::NamedTempFile,
    /// Its size in bytes.
    pub size: u64,
    /// `file` or `directory`: what the exported path was.
    pub artifact_type: String,
    /// Archive entries.
    pub entry_count: u64,
    /// Bytes of regular-file content.
    pub bytes_written: u64,
}

/// One VM, booted or attached. Cheap to clone; every method talks to its supervisor.
#[derive(Debug, Clone)]
pub struct Machine {
    dir: VmDir,
}

impl Machine {
    /// Write the launch spec for `spec`, start the VM's supervisor and wait until the guest
    /// agent is ready (and the guest network configured, for a VM with a NIC). On failure
    /// nothing of the VM keeps running. Unless `spec.snapshot` is set, a memory state saved
    /// in `spec.dir` is discarded first: a cold boot moves the disk past what it believes.
    pub async fn boot(spec: BootSpec) -> Result<(Machine, Booted)> {
        Self::launch(spec, None).await
    }

    /// Start QEMU with the same shape as `spec` and load `state` (`spec.dir` may differ from
    /// the directory that saved it: forks and warm runs restore a state saved elsewhere;
    /// `spec.disk` is the disk to use, and must hold exactly what the saved guest believes
    /// it wrote). Refuses a fingerprint mismatch ([`Error::InvalidState`] saying what
    /// differs). The agent is then told the host time, fresh entropy (kernel RNG reseeded)
    /// and `spec.hostname` before [`Booted`] is returned. A state QEMU cannot load fails with
    /// [`Error::CorruptState`] naming the file; nothing keeps running.
    ///
    /// A resume in place (the state is in `spec.dir`, `spec.snapshot` off) re-applies the
    /// ports that were published when it paused and uses the state up: it is discarded once
    /// loaded, before the guest runs an instruction, because from then on the disk moves past
    /// what the saved page cache believes. Restores from elsewhere (forks, warm runs) leave
    /// the state alone.
    ///
    /// [`Machine::boot`] (a cold boot, `snapshot` off) discards any state in its VM
    /// directory, for the same reason.
    pub async fn restore(spec: BootSpec, state: &MemoryState) -> Result<(Machine, Booted)> {
        let now = crate::fingerprint(&spec);
        if let Some(why) = crate::fingerprint_mismatch(&state.meta.fingerprint, &now) {
            return Err(Error::InvalidState(format!(
                "the memory state {} was saved by a differently shaped machine ({why}); start the VM cold instead",
                state.path.display()
            )));
        }
        let size = std::fs::metadata(&state.path)
            .map_err(|e| Error::CorruptState(format!("cannot read the memory state {}: {e}", state.path.display())))?
            .len();
        if size != state.meta.state_bytes {
            return Err(Error::CorruptState(format!(
                "the memory state {} is damaged: it holds {size} bytes, {} were saved",
                state.path.display(),
                state.meta.state_bytes
            )));
        }
        Self::launch(spec, Some(state)).await
    }

    async fn launch(spec: BootSpec, restore: Option<&MemoryState>) -> Result<(Machine, Booted)> {
        if let Some(name) = &spec.hostname {
            if !crate::snapshot::valid_hostname(name) {
                return Err(Error::InvalidInput(format!("{name:?} is not a valid hostname")));
            }
        }
        let qemu_bin = backend::qemu_binary().ok_or_else(|| {
            Error::HostRequirement("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into())
        })?;
        let vm = spec.dir.clone();
        vm.check_socket_paths()?;
        // `egress` means the internet, never this host: without a kernel that can filter
        // QEMU's connections (crate::netfilter) a networked VM does not start.
        let allow_private_network = if spec.network.has_nic() {
            crate::netfilter::available().map_err(Error::HostRequirement)?;
            crate::netfilter::allow_private_from_env().map_err(Error::InvalidInput)?
        } else {
            false
        };
        vm.create()?;
        vm.clean_stale_files();
        let (agent_socket, qmp_socket) = (vm.agent_socket(), vm.qmp_socket());
        let launch = qemu::QemuLaunch {
            accel: spec.accel,
            vcpu_count: spec.vcpu_count,
            mem_mib: spec.mem_mib,
            kernel: &spec.kernel,
            initramfs: &spec.initramfs,
            disk: &spec.disk,
            disk_format: spec.disk_format,
            snapshot: spec.snapshot,
            agent_socket: &agent_socket,
            qmp_socket: &qmp_socket,
            network: spec.network.has_nic(),
            tsc_khz: qemu::host_tsc_khz(),
            incoming: restore.is_some(),
        };
        // A resume in place: the state in this VM's own directory. Its ports come back (a
        // fork or warm run restoring the state elsewhere is a new machine whose host ports
        // are its own business), and the state is used up, since the guest moves its disk on.
        let in_place = restore.is_some_and(|state| state.path.parent() == Some(vm.path()));
        let restore_ports = match restore {
            Some(state) if in_place && spec.network.allows_published_ports() => state.meta.published.clone(),
            _ => Vec::new(),
        };
        if restore.is_none() && !spec.snapshot && vm.memory_meta().exists() {
            // A cold boot of this VM moves its disk on (whether or not the disk file is the
            // one the state was saved with: a fork puts a paused VM onto an overlay over its
            // frozen disk): the state could never be resumed safely again.
            MemoryState::discard(&vm)?;
        }
        let launch_spec = LaunchSpec {
            vm_id: spec.vm_id.clone(),
            vmm_bin: qemu_bin,
            vmm_args: qemu::qemu_args(&launch),
            backend: Backend::Qemu,
            accel: spec.accel,
            boot_timeout_ms: BOOT_TIMEOUT.as_millis() as u64,
            owner_pid: spec.owner_pid,
            remove_dir_on_exit: spec.remove_dir_on_exit,
            network: spec.network.has_nic(),
            allow_private_network,
            publish_ports: spec.network.allows_published_ports(),
            restore_from: restore.map(|s| s.path.clone()),
            consume_state: in_place && !spec.snapshot,
            restore_ports,
            hostname: spec.hostname.clone(),
            idle_pause_ms: spec.idle_pause.as_ref().map(|p| p.after.as_millis() as u64),
            lock_path: spec.idle_pause.as_ref().map(|p| p.lock_path.clone()),
            mem_mib: spec.mem_mib,
            vcpu_count: spec.vcpu_count,
            disk: spec.disk.clone(),
            disk_format: spec.disk_format,
            fingerprint: crate::fingerprint(&spec),
        };
        pyro_sys::write_atomic(
            &vm.launch_spec(),
            serde_json::to_vec_pretty(&launch_spec).expect("launch spec serializes").as_slice(),
        )
        .map_err(|e| Error::io("writing the launch spec", e))?;
        let ready = client::spawn(&spec.supervisor_bin, &vm, BOOT_TIMEOUT + Duration::from_secs(5)).await?;
        let machine = Machine { dir: vm };
        // A restored guest's network is configured already (it is part of its memory).
        if spec.network.has_nic() && restore.is_none() {
            if let Err(e) = machine.configure_user_network().await {
                machine.kill();
                return Err(e);
            }
        }
        let booted = Booted {
            supervisor_pid: ready.supervisor_pid,
            vmm_pid: ready.vmm_pid,
            ready_ms: ready.ready_ms,
            agent_version: ready.agent_version,
            transport: AGENT_TRANSPORT,
            restored: ready.restored,
        };
        Ok((machine, booted))
    }

    /// The VM in `dir`, running or not (a call to a VM that is not running fails with
    /// [`Error::NotRunning`]).
    pub fn attach(dir: VmDir) -> Machine {
        Machine { dir }
    }

    /// The VM's directory.
    pub fn dir(&self) -> &VmDir {
        &self.dir
    }

    /// Is the VM running?
    pub fn is_running(&self) -> bool {
        self.dir.is_running()
    }

    /// Send one request to the VM's supervisor and wait (at most `timeout`) for its answer.
    /// Dropping the returned future closes the connection, which makes the supervisor
    /// cancel the request in the guest.
    pub async fn call(&self, request: Request, timeout: Option<Duration>) -> Result<Response> {
        client::call(&self.dir, request, timeout).await
    }

    /// Stop the VM: clean guest shutdown bounded by `timeout` (zero = kill at once), then
    /// make sure nothing of it runs and its stale files are gone.
    pub async fn shutdown(&self, timeout: Duration) -> Result<()> {
        if self.dir.is_running() {
            let req = Request::Supervisor(SupervisorRequest::Shutdown { timeout_ms: timeout.as_millis() as u64 });
            let _ = self.call(req, Some(timeout + Duration::from_secs(10))).await;
            // Wait briefly for the supervisor to exit by itself before forcing it.
            for _ in 0..100 {
                if !self.dir.is_running() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.kill();
        Ok(())
    }

    /// Quiesce (new guest requests are refused; those in flight get `timeout` to finish, else
    /// the pause is abandoned), guest `sync`, save RAM and device state into
    /// [`VmDir::memory_state`] (temp file, fsync, rename, then [`VmDir::memory_meta`]), end
    /// QEMU and the supervisor. Free space is checked first ([`Error::HostRequirement`] with
    /// the numbers). On any failure the VM keeps running.
    pub async fn pause(&self, timeout: Duration) -> Result<Paused> {
        // Taken first: the supervisor removes its pid record before it exits.
        let processes = client::live_processes(&self.dir);
        let req = Request::Supervisor(SupervisorRequest::Pause { timeout_ms: timeout.as_millis() as u64 });
        let answer = self.call(req, Some(timeout + PAUSE_SAVE_TIMEOUT)).await?;
        match answer {
            Response::Paused { state_bytes, pause_ms } => {
                // The supervisor exits right after answering; a caller that sees `Paused`
                // must find no process of the VM left.
                client::wait_gone(&processes, Duration::from_secs(10)).await;
                Ok(Paused { state_bytes, pause_ms })
            }
            Response::Error(e) => Err(match e.kind.as_str() {
                "host_requirement" => Error::HostRequirement(e.message),
                "invalid_state" => Error::InvalidState(e.message),
                _ => guest_error(e),
            }),
            other => Err(Error::unexpected("pause", other)),
        }
    }

    /// SIGKILL the VM's recorded processes (identity-checked) and remove its stale files.
    pub fn kill(&self) {
        self.dir.kill();
        self.dir.clean_stale_files();
    }

    async fn configure_user_network(&self) -> Result<()> {
        use crate::network::{USER_NET_DNS, USER_NET_GATEWAY, USER_NET_GUEST_IP};
        let script = format!(
            "set -e; ip link set eth0 up; ip addr add {USER_NET_GUEST_IP}/24 dev eth0; \
             ip route add default via {USER_NET_GATEWAY}; echo 'nameserver {USER_NET_DNS}' > /etc/resolv.conf"
        );
        let r = self.exec(&script, None, BTreeMap::new(), Duration::from_secs(20), 64 * 1024).await?;
        if r.exit_code != 0 {
            return Err(Error::Boot(format!(
                "configuring the guest network failed: {}",
                String::from_utf8_lossy(&r.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Run a command in the guest (`/bin/sh -lc`) with extra environment variables. The
    /// output is capped at `output_cap_bytes` per stream, on the host too.
    pub async fn exec(
        &self,
        command: &str,
        cwd: Option<&str>,
        env: BTreeMap<String, String>,
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
        match self.guest_call(req, timeout + Duration::from_secs(15)).await? {
            Response::Exec(mut r) => {
                cap_exec_output(&mut r, output_cap_bytes);
                Ok(r)
            }
            other => Err(Error::unexpected("exec", other)),
        }
    }

    /// Flush every guest filesystem (`sync(2)` in the guest; each flush reaches the image
    /// file through virtio-blk FLUSH, which QEMU turns into an fdatasync).
    pub async fn sync(&self) -> Result<()> {
        match self.guest_call(Request::Sync, FS_TIMEOUT).await? {
            Response::Ok => Ok(()),
            other => Err(Error::unexpected("sync", other)),
        }
    }

    /// One request to the guest; an error answer goes through [`guest_error`].
    async fn guest_call(&self, request: Request, timeout: Duration) -> Result<Response> {
        match self.call(request, Some(timeout)).await? {
            Response::Error(e) => Err(guest_error(e)),
            other => Ok(other),
        }
    }

    async fn fs(&self, req: FsRequest) -> Result<FsResponse> {
        match self.guest_call(Request::Fs(req), FS_TIMEOUT).await? {
            Response::Fs(r) => Ok(r),
            Response::Ok => Ok(FsResponse::Data { data: Vec::new() }),
            other => Err(Error::unexpected("a filesystem request", other)),
        }
    }

    /// Upload a plain tar (from a reader: one chunk in memory at a time, whatever the
    /// archive's size) and extract it under `destination` in the guest. Returns (entries,
    /// bytes written).
    pub async fn push_archive<R: std::io::Read>(&self, mut tar: R, destination: &str) -> Result<(u64, u64)> {
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
            let upload = self.fs(FsRequest::UploadChunk { transfer_id: transfer_id.clone(), offset, data });
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
        match self.fs(FsRequest::ExtractUpload { transfer_id, destination: destination.to_string() }).await? {
            FsResponse::Extracted { entry_count, bytes_written, .. } => Ok((entry_count, bytes_written)),
            other => Err(Error::unexpected("extract", other)),
        }
    }

    /// Tar up `path` in the guest and bring it to a temporary file in `spool_dir`.
    ///
    /// The guest is hostile: the size it declares is checked against
    /// [`MAX_PULLED_ARCHIVE_BYTES`] before anything is read, every chunk must be no longer
    /// than the range asked for, and the archive goes to disk in chunks, never whole into
    /// memory.
    pub async fn pull_archive(&self, path: &str, spool_dir: &Path) -> Result<Exported> {
        use std::io::{Seek, Write};
        let (transfer_id, size, artifact_type, entry_count, bytes_written) =
            match self.fs(FsRequest::Export { path: path.to_string() }).await? {
                FsResponse::Exported { transfer_id, size, artifact_type, entry_count, bytes_written } => {
                    (transfer_id, size, artifact_type, entry_count, bytes_written)
                }
                other => return Err(Error::unexpected("export", other)),
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
                async move { (len, self.fs(req).await) }
            });
            let mut reads = futures::stream::iter(ranges).buffered(TRANSFER_PIPELINE_DEPTH);
            while let Some((len, answer)) = reads.next().await {
                match answer? {
                    FsResponse::Data { data } if data.len() as u64 == len => file.write_all(&data).map_err(spool)?,
                    FsResponse::Data { data } if data.len() as u64 > len => {
                        return Err(Error::Channel(format!(
                            "the guest answered a read of {len} bytes with {} bytes; export refused",
                            data.len()
                        )))
                    }
                    _ => return Err(Error::Channel("the guest export ended early".into())),
                }
            }
            file.flush().map_err(spool)?;
            file.as_file_mut().rewind().map_err(spool)?;
            Ok(file)
        }
        .await;
        let _ = self.fs(FsRequest::DiscardTransfer { transfer_id }).await;
        Ok(Exported { file: read?, size, artifact_type, entry_count, bytes_written })
    }

    /// List `path` (recursively or one level): (artifact type of `path`, entries).
    pub async fn list_files(&self, path: &str, recursive: bool) -> Result<(String, Vec<FileEntry>)> {
        match self.fs(FsRequest::List { path: path.to_string(), recursive }).await? {
            FsResponse::Listing { artifact_type, entries, .. } => Ok((artifact_type, entries)),
            other => Err(Error::unexpected("list", other)),
        }
    }

    /// (size_bytes, first `max_bytes` bytes) of a regular file.
    pub async fn read_file(&self, path: &str, max_bytes: u64) -> Result<(u64, Vec<u8>)> {
        match self.fs(FsRequest::Read { path: path.to_string(), max_bytes }).await? {
            FsResponse::FileData { size_bytes, data, .. } => Ok((size_bytes, data)),
            other => Err(Error::unexpected("read", other)),
        }
    }

    /// Write a file (parents created): (size_bytes, bytes_written).
    pub async fn write_file(&self, path: &str, data: Vec<u8>) -> Result<(u64, u64)> {
        match self.fs(FsRequest::Write { path: path.to_string(), data }).await? {
            FsResponse::Written { size_bytes, bytes_written, .. } => Ok((size_bytes, bytes_written)),
            other => Err(Error::unexpected("write", other)),
        }
    }

    /// Delete a file or directory tree.
    pub async fn delete_path(&self, path: &str) -> Result<()> {
        self.fs(FsRequest::Delete { path: path.to_string() }).await.map(|_| ())
    }

    /// Replace the guest's `/run/pyro-secrets` contents (tmpfs; never on the disk image).
    pub async fn install_secrets(&self, secrets: Vec<SecretFile>) -> Result<()> {
        self.fs(FsRequest::InstallSecrets { secrets }).await.map(|_| ())
    }

    /// One shell request; `timeout` bounds the whole round trip (idle waits included).
    pub async fn shell(&self, req: ShellRequest, timeout: Duration) -> Result<ShellResponse> {
        match self.guest_call(Request::Shell(req), timeout).await? {
            Response::Shell(r) => Ok(r),
            other => Err(Error::unexpected("a shell request", other)),
        }
    }

    /// One service request; `timeout` bounds the whole round trip (readiness waits
    /// included).
    pub async fn service(&self, req: ServiceRequest, timeout: Duration) -> Result<ServiceResponse> {
        match self.guest_call(Request::Service(req), timeout).await? {
            Response::Service(r) => Ok(r),
            other => Err(Error::unexpected("a service request", other)),
        }
    }

    /// One background command request; `timeout` bounds the round trip (a `Wait` asks for
    /// its own wait time on top).
    pub async fn command(
        &self,
        req: pyro_protocol::command::CommandRequest,
        timeout: Duration,
    ) -> Result<pyro_protocol::command::CommandResponse> {
        match self.guest_call(Request::Command(req), timeout).await? {
            Response::Command(r) => Ok(r),
            other => Err(Error::unexpected("a background command request", other)),
        }
    }

    /// Forward these host loopback ports to guest ports for as long as `service` runs
    /// (all or none). The VM's supervisor does it; refused unless the VM was booted with
    /// [`NetworkPolicy::EgressPublishedPorts`].
    pub async fn publish(&self, service: &str, ports: Vec<PortForward>) -> Result<()> {
        let req = Request::Supervisor(SupervisorRequest::Publish { service: service.to_string(), ports });
        match self.guest_call(req, PORTS_TIMEOUT).await? {
            Response::Ok => Ok(()),
            other => Err(Error::unexpected("publish", other)),
        }
    }

    /// Remove these forwards (a forward already gone is no error).
    pub async fn unpublish(&self, ports: Vec<PortForward>) -> Result<()> {
        match self.guest_call(Request::Supervisor(SupervisorRequest::Unpublish { ports }), PORTS_TIMEOUT).await? {
            Response::Ok => Ok(()),
            other => Err(Error::unexpected("unpublish", other)),
        }
    }

    /// Change the running VM's idle pause (`None` turns it off); the idle time counts from
    /// now. What a later boot or restore uses comes from its [`BootSpec`] again.
    pub async fn set_idle_pause(&self, idle_pause: Option<&crate::IdlePause>) -> Result<()> {
        let (after_ms, lock_path) = match idle_pause {
            Some(p) => (p.after.as_millis().max(1) as u64, p.lock_path.display().to_string()),
            None => (0, String::new()),
        };
        let req = Request::Supervisor(SupervisorRequest::SetIdlePause { after_ms, lock_path });
        match self.guest_call(req, PORTS_TIMEOUT).await? {
            Response::Ok => Ok(()),
            other => Err(Error::unexpected("set_idle_pause", other)),
        }
    }
}

/// The one mapping of an error answer from the guest (or the supervisor): its kind and
/// message, unchanged.
pub(crate) fn guest_error(e: ErrorInfo) -> Error {
    Error::Guest { kind: e.kind, message: e.message }
}

/// Re-apply the output cap to an exec answer on the host: the agent is asked to cap each
/// stream, but a hostile one may send more. Each of stdout and stderr is cut to
/// `min(requested_cap, 16 MiB)` bytes and its `*_truncated` flag set when anything was cut;
/// a flag the agent set stays set.
pub(crate) fn cap_exec_output(r: &mut ExecResult, requested_cap: u64) {
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
