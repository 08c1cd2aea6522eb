//! Small shared helpers.

pub use pyro_sys::{create_private_dir, write_atomic, ProcessIdentity};

use std::io::Write;
use std::path::Path;

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Float Unix seconds, the timestamp format of every payload.
pub fn now_f64() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// First 12 hex chars of a random UUID4, the id format of VMs, workspaces and shells.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Log something the guest sent that the host refused (a hostile or broken guest): on stderr
/// and in `<dir>/guest-refused.log`, which stops growing at [`GUEST_REFUSAL_LOG_CAP`] so a
/// guest cannot fill the host disk through it.
pub fn log_guest_refusal(dir: &Path, message: &str) {
    eprintln!("[warn] guest: {message}");
    let path = dir.join(GUEST_REFUSAL_LOG);
    if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) >= GUEST_REFUSAL_LOG_CAP {
        return;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let line: String = message.chars().take(512).collect();
        let _ = writeln!(f, "{:.3} {}", now_f64(), line.replace(['\n', '\r'], " "));
    }
}

/// File name of the refusal log in a workspace directory.
pub const GUEST_REFUSAL_LOG: &str = "guest-refused.log";
/// Size past which the refusal log is no longer appended to.
pub const GUEST_REFUSAL_LOG_CAP: u64 = 64 * 1024;
