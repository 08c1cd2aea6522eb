//! Wire protocol between the pyro host (engine, VM supervisor) and the pyro guest agent.
//!
//! Transport: a byte stream (virtio-serial port, Firecracker vsock, or the supervisor's Unix
//! socket). Framing: 4-byte big-endian length prefix ([`tokio_util::codec::LengthDelimitedCodec`])
//! around one MessagePack-encoded [`RequestFrame`] or [`ResponseFrame`] (field names kept, so
//! adding optional fields stays compatible).
//!
//! Every request carries an `id` chosen by the sender; the response echoes it. Requests are
//! served concurrently, so responses may come back in any order. The guest agent sends one
//! unsolicited [`Response::Ready`] with id [`READY_FRAME_ID`] as soon as it owns the channel.

pub mod fs;
pub mod session;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio_util::codec::LengthDelimitedCodec;

/// Bumped on any incompatible change to the types below.
pub const PROTOCOL_VERSION: u32 = 1;
/// Name of the virtio-serial port the agent listens on (QEMU backend).
pub const AGENT_PORT_NAME: &str = "org.pyro.agent";
/// vsock port of the agent (Firecracker backend).
pub const AGENT_VSOCK_PORT: u32 = 5005;
/// Request id used by the agent's unsolicited ready frame.
pub const READY_FRAME_ID: u64 = 0;
/// Largest frame either side accepts (exec output is capped well below this).
pub const MAX_FRAME_BYTES: usize = 96 * 1024 * 1024;
/// Default per-stream cap on captured exec output.
pub const DEFAULT_OUTPUT_CAP_BYTES: u64 = 16 * 1024 * 1024;

/// The framing codec both sides use.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME_BYTES).new_codec()
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("could not encode frame: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("could not decode frame: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

/// Serialize a frame body (use with the codec from [`codec`]).
pub fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes, ProtocolError> {
    Ok(rmp_serde::to_vec_named(value)?.into())
}

/// Deserialize a frame body.
pub fn decode<'a, T: Deserialize<'a>>(buf: &'a [u8]) -> Result<T, ProtocolError> {
    Ok(rmp_serde::from_slice(buf)?)
}

/// Only the id of a frame: lets a receiver answer a request it cannot decode.
#[derive(Debug, Clone, Deserialize)]
pub struct FrameId {
    pub id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: u64,
    pub request: Request,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub id: u64,
    pub response: Response,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Version handshake; the first request a host sends.
    Hello { protocol_version: u32, host_version: String },
    /// Liveness check.
    Ping,
    /// Send `data` back unchanged: measures the raw channel (benchmarks, diagnostics).
    Echo {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Run a shell command.
    Exec(ExecRequest),
    /// Cancel a running request (kills an exec's process group). Answered with `Ok`.
    Cancel { request_id: u64 },
    /// Flush all guest filesystems.
    Sync,
    /// Stop every process, flush, remount read-only and power the guest off. Answered
    /// with `Ok` just before the power-off.
    Poweroff,
    /// Handled by the per-VM supervisor, never forwarded to the guest.
    Supervisor(SupervisorRequest),
    /// Workspace filesystem and archive operations.
    Fs(fs::FsRequest),
    /// PTY shells.
    Shell(session::ShellRequest),
    /// Background services.
    Service(session::ServiceRequest),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SupervisorRequest {
    /// Describe the VM the supervisor owns.
    Status,
    /// Clean guest shutdown (sync + poweroff through the agent) with a bounded wait, then
    /// kill the VMM if it is still alive. The supervisor exits after answering.
    Shutdown { timeout_ms: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Run via `/bin/sh -lc`.
    pub command: String,
    /// Working directory; `None` = `/`.
    pub cwd: Option<String>,
    /// Extra environment on top of the agent's base environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Kill the whole process group after this long and report exit code 124.
    pub timeout_ms: u64,
    /// Per-stream capture cap; output past it is drained and dropped.
    pub output_cap_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Unsolicited, id 0: the agent owns the channel and serves requests.
    Ready {
        agent_version: String,
        protocol_version: u32,
        boot_ms: u64,
    },
    Hello(HelloInfo),
    Pong,
    Echo {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Ok,
    Exec(ExecResult),
    Supervisor(SupervisorStatus),
    Fs(fs::FsResponse),
    Shell(session::ShellResponse),
    Service(session::ServiceResponse),
    Error(ErrorInfo),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloInfo {
    pub protocol_version: u32,
    pub agent_version: String,
    pub kernel_release: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecResult {
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub exit_code: i32,
    pub timed_out: bool,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorStatus {
    pub supervisor_pid: u32,
    pub vmm_pid: u32,
    pub backend: String,
    pub accel: String,
    pub agent_version: String,
    pub ready_ms: u64,
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorInfo {
    /// Stable machine-readable kind, e.g. `bad_request`, `unsupported`, `io`, `cancelled`.
    pub kind: String,
    pub message: String,
}

impl Response {
    pub fn error(kind: &str, message: impl Into<String>) -> Self {
        Response::Error(ErrorInfo { kind: kind.to_string(), message: message.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_result_round_trips_binary_output() {
        let result = ExecResult {
            stdout: vec![0, 255, 254, b'\n'],
            stderr: b"err".to_vec(),
            stdout_truncated: true,
            stderr_truncated: false,
            exit_code: 7,
            timed_out: false,
            duration_ms: 12,
        };
        let frame = ResponseFrame { id: 9, response: Response::Exec(result.clone()) };
        let bytes = encode(&frame).unwrap();
        let back: ResponseFrame = decode(&bytes).unwrap();
        assert_eq!(back.id, 9);
        match back.response {
            Response::Exec(r) => assert_eq!(r, result),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_request_still_yields_its_id() {
        #[derive(Serialize)]
        struct Future {
            id: u64,
            request: BTreeMap<String, String>,
        }
        let mut req = BTreeMap::new();
        req.insert("type".into(), "teleport".into());
        let bytes = encode(&Future { id: 42, request: req }).unwrap();
        assert!(decode::<RequestFrame>(&bytes).is_err());
        assert_eq!(decode::<FrameId>(&bytes).unwrap().id, 42);
    }
}
