//! A minimal QMP client: enough to run human-monitor commands (`hostfwd_add`,
//! `hostfwd_remove`) on a VM's QEMU through its `qmp.sock`.
//!
//! Only the VM's supervisor talks to QMP ([`crate::ports`]); QEMU serves one QMP client at
//! a time, so the supervisor runs one command at a time.

use crate::{Error, Result, VmDir};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Run one human-monitor command and return its text output.
pub(crate) async fn human_command(vm: &VmDir, command_line: &str) -> Result<String> {
    tokio::time::timeout(QMP_TIMEOUT, session(&vm.qmp_socket(), command_line))
        .await
        .map_err(|_| Error::Channel(format!("QEMU's monitor did not answer within {} s", QMP_TIMEOUT.as_secs())))?
}

async fn session(socket: &Path, command_line: &str) -> Result<String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| Error::NotRunning(format!("the VM is not running (cannot reach QEMU's monitor: {e})")))?;
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
        return Err(Error::InvalidInput(format!("QEMU refused `{command_line}`: {err}")));
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
            .ok_or_else(|| Error::Channel("QEMU closed its monitor connection".into()))?;
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| Error::Channel(format!("unreadable QMP message {line:?}: {e}")))?;
        if value.get("event").is_none() {
            return Ok(value);
        }
    }
}
