//! pyro's one syscall module: every `unsafe` call into libc that the host crates share
//! lives here, behind a safe function with the reason for each call. crosvm's `base` crate
//! is the model: the rest of pyro asks for "a lock", "a rename that never replaces", "the
//! identity of a pid", never for a raw syscall.
//!
//! Errors are plain [`std::io::Error`]s; callers add what they were doing.

#![deny(missing_docs)]

pub mod fs;
pub mod lock;
pub mod process;

pub use fs::{create_private_dir, link_anonymous_noreplace, make_private, rename_noreplace, write_atomic};
#[cfg(feature = "async")]
pub use lock::lock_async;
pub use lock::{lock, try_lock, FileLock, LockMode};
pub use process::{boot_id, effective_uid, pid_alive, process_start_ticks, signal_process_group, ProcessIdentity};
