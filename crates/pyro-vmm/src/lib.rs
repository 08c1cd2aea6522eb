//! pyro's VM runtime: everything that owns a running VM, below the product layer.
//!
//! - [`VmDir`] owns the layout of a VM directory: no other crate joins a file name onto it.
//! - [`Machine`] is the handle the product holds: [`Machine::boot`] from a [`BootSpec`],
//!   [`Machine::attach`] to a running VM, [`Machine::call`], [`Machine::shutdown`],
//!   [`Machine::kill`], and the guest RPC (exec, filesystem, shells, services, published
//!   ports) with one mapping of guest errors.
//! - The per-VM supervisor process ([`supervisor::server`], the `pyro-supervisor` binary)
//!   owns QEMU, the agent channel, QEMU's monitor (QMP) and the published-port registry.
//!   Only this crate talks to `supervisor.sock` and to QMP.
//! - Memory snapshots ([`MemoryState`], [`Machine::pause`], [`Machine::restore`]): a VM's RAM
//!   and device state saved into its directory and loaded into a new QEMU of the same shape.
//! - [`backend`] chooses QEMU with KVM or TCG from a real, cached boot probe.
//! - The egress filter (`netfilter`) and the bounded console log live here because the
//!   supervisor installs them around QEMU.

#![deny(missing_docs)]

pub mod backend;
mod console;
mod error;
mod machine;
mod netfilter;
mod network;
mod ports;
mod qmp;
mod snapshot;
pub mod supervisor;
mod util;
mod vm_dir;

pub use backend::{Accel, Backend, BackendChoice};
pub use error::{Error, Result};
pub use machine::{BootSpec, Booted, Exported, Machine, AGENT_TRANSPORT, BOOT_TIMEOUT, MAX_PULLED_ARCHIVE_BYTES};
pub use netfilter::available as egress_filter_available;
pub use network::{NetworkPolicy, USER_NET_DNS, USER_NET_GATEWAY, USER_NET_GUEST_IP, USER_NET_SUBNET};
pub use snapshot::{
    create_overlay, fingerprint, fingerprint_mismatch, flatten_disk, DiskFormat, IdlePause, MemoryMeta, MemoryState,
    Paused, PublishedPort, MEMORY_FORMAT, PAUSE_SPACE_MARGIN_BYTES,
};
pub use util::{tail_lines, which};
pub use vm_dir::{clone_disk, supervisors_under, VmDir};
