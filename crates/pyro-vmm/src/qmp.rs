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

/// One QMP connection for a sequence of commands (pause, restore). The supervisor holds the
/// port registry's lock while it uses one, so no other monitor session competes with it.
pub(crate) struct Session {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Session {
    /// Connect (retrying until `wait` has passed: a QEMU just started has no socket yet) and
    /// negotiate capabilities.
    pub(crate) async fn connect(socket: &Path, wait: Duration) -> Result<Session> {
        let deadline = std::time::Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(socket).await {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(Error::NotRunning(format!("cannot reach QEMU's monitor {}: {e}", socket.display())))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let (read, write) = stream.into_split();
        let mut session = Session { lines: BufReader::new(read).lines(), write };
        tokio::time::timeout(QMP_TIMEOUT, async {
            next_reply(&mut session.lines).await?;
            session
                .write
                .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
                .await
                .map_err(|e| Error::io("writing to QMP", e))?;
            next_reply(&mut session.lines).await
        })
        .await
        .map_err(|_| Error::Channel("QEMU's monitor did not greet".into()))??;
        Ok(session)
    }

    /// Run one command; its `return` value, or an error quoting QEMU's description.
    pub(crate) async fn execute(&mut self, command: &str, arguments: serde_json::Value) -> Result<serde_json::Value> {
        let cmd = if arguments.is_null() {
            serde_json::json!({ "execute": command })
        } else {
            serde_json::json!({ "execute": command, "arguments": arguments })
        };
        let reply = tokio::time::timeout(QMP_TIMEOUT, async {
            self.write.write_all(format!("{cmd}\n").as_bytes()).await.map_err(|e| Error::io("writing to QMP", e))?;
            next_reply(&mut self.lines).await
        })
        .await
        .map_err(|_| {
            Error::Channel(format!("QEMU's monitor did not answer `{command}` within {} s", QMP_TIMEOUT.as_secs()))
        })??;
        if let Some(err) = reply.get("error") {
            let desc = err.get("desc").and_then(|d| d.as_str()).unwrap_or("no description");
            return Err(Error::Channel(format!("QEMU refused `{command}`: {desc}")));
        }
        Ok(reply.get("return").cloned().unwrap_or(serde_json::Value::Null))
    }

    /// Hand QEMU an open file as `fdname` (QMP `getfd`, the descriptor passed with
    /// SCM_RIGHTS). Migration then reads or writes it as `fd:<fdname>`: QEMU never sees a
    /// host path, and the file is complete when QEMU says the migration completed.
    pub(crate) async fn send_fd(&mut self, fdname: &str, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::os::fd::AsRawFd;
        let cmd = serde_json::json!({ "execute": "getfd", "arguments": { "fdname": fdname } });
        let line = format!("{cmd}\n");
        let stream: &UnixStream = self.write.as_ref();
        let fds = [fd.as_raw_fd()];
        loop {
            stream.writable().await.map_err(|e| Error::io("waiting for QMP", e))?;
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                sendmsg::<()>(
                    stream.as_raw_fd(),
                    &[std::io::IoSlice::new(line.as_bytes())],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::empty(),
                    None,
                )
                .map_err(std::io::Error::from)
            });
            match sent {
                // The command is a few dozen bytes: a Unix stream socket with room takes it whole.
                Ok(n) if n == line.len() => break,
                Ok(n) => return Err(Error::Channel(format!("QMP took {n} of {} bytes of getfd", line.len()))),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Error::io("passing a file to QEMU", e)),
            }
        }
        let reply = tokio::time::timeout(QMP_TIMEOUT, next_reply(&mut self.lines))
            .await
            .map_err(|_| Error::Channel("QEMU's monitor did not answer getfd".into()))??;
        if let Some(err) = reply.get("error") {
            return Err(Error::Channel(format!("QEMU refused getfd: {err}")));
        }
        Ok(())
    }

    /// `query-migrate`'s status (`setup`, `active`, `completed`, `failed`, ...) and, when
    /// it failed, QEMU's reason.
    pub(crate) async fn migration_status(&mut self) -> Result<(String, Option<String>)> {
        let r = self.execute("query-migrate", serde_json::Value::Null).await?;
        let status = r.get("status").and_then(|s| s.as_str()).unwrap_or("none").to_string();
        let why = r.get("error-desc").and_then(|s| s.as_str()).map(str::to_string);
        Ok((status, why))
    }

    /// `query-status`'s run state (`running`, `paused`, `inmigrate`, `postmigrate`, ...).
    pub(crate) async fn run_state(&mut self) -> Result<String> {
        let r = self.execute("query-status", serde_json::Value::Null).await?;
        Ok(r.get("status").and_then(|s| s.as_str()).unwrap_or("unknown").to_string())
    }
}
