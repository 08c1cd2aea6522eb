//! A minimal QMP client: enough to run human-monitor commands (`hostfwd_add`,
//! `hostfwd_remove`) on a VM's QEMU through `runtime/qmp.sock`.
//!
//! QEMU serves one QMP client at a time, so callers are serialised by a lock file beside
//! the socket.

use crate::{Error, Result};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Run one human-monitor command and return its text output.
pub async fn human_command(vm_dir: &Path, command_line: &str) -> Result<String> {
    let lock_path = vm_dir.join("qmp.lock");
    let _lock = crate::workspace::store::flock_exclusive_async(&lock_path).await?;
    tokio::time::timeout(QMP_TIMEOUT, session(vm_dir, command_line))
        .await
        .map_err(|_| Error::Guest(format!("QEMU's monitor did not answer within {} s", QMP_TIMEOUT.as_secs())))?
}

async fn session(vm_dir: &Path, command_line: &str) -> Result<String> {
    let socket = vm_dir.join(crate::supervisor::QMP_SOCKET);
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|e| Error::InvalidState(format!("the VM is not running (cannot reach QEMU's monitor: {e})")))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    // Greeting, then capabilities negotiation, then the command.
    next_reply(&mut lines).await?;
    write.write_all(b"{\"execute\":\"qmp_capabilities\"}\n").await.map_err(|e| Error::io("writing to QMP", e))?;
    next_reply(&mut lines).await?;
    let cmd = serde_json::json!({
        "execute": "human-monitor-command",
        "arguments": {"command-line": command_line},
    });
    write.write_all(format!("{cmd}\n").as_bytes()).await.map_err(|e| Error::io("writing to QMP", e))?;
    let reply = next_reply(&mut lines).await?;
    if let Some(err) = reply.get("error") {
        return Err(Error::Guest(format!("QEMU refused `{command_line}`: {err}")));
    }
    Ok(reply.get("return").and_then(|r| r.as_str()).unwrap_or("").to_string())
}

/// The next non-event message.
async fn next_reply(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Result<serde_json::Value> {
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| Error::io("reading from QMP", e))?
            .ok_or_else(|| Error::Guest("QEMU closed its monitor connection".into()))?;
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| Error::Guest(format!("unreadable QMP message {line:?}: {e}")))?;
        if value.get("event").is_none() {
            return Ok(value);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Published-port registry: which `hostfwd` rules belong to which service, so the VM's
// supervisor can remove a rule as soon as its service ends (see `supervisor::watch_ports`).
// ---------------------------------------------------------------------------------------

/// File in the VM directory listing the live published-port rules.
pub const PUBLISHED_FILE: &str = "published.json";

/// One `hostfwd` rule and the service it publishes for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedRule {
    pub service: String,
    pub host: String,
    pub host_port: u16,
}

impl PublishedRule {
    /// The monitor command that removes this rule.
    pub fn remove_command(&self) -> String {
        format!("hostfwd_remove net0 tcp:{}:{}", self.host, self.host_port)
    }
}

/// The rules currently recorded for this VM.
pub fn published(vm_dir: &Path) -> Vec<PublishedRule> {
    std::fs::read(vm_dir.join(PUBLISHED_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Change the recorded rules under a lock (engine and supervisor both edit them).
pub fn edit_published(vm_dir: &Path, f: impl FnOnce(&mut Vec<PublishedRule>)) -> Result<()> {
    let _lock = crate::workspace::store::flock_exclusive(&vm_dir.join("published.lock"))?;
    let mut rules = published(vm_dir);
    f(&mut rules);
    let path = vm_dir.join(PUBLISHED_FILE);
    crate::util::write_atomic(&path, &serde_json::to_vec(&rules).expect("serialisable"))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
