//! Wire protocol between the pyro host (engine, VM supervisor) and the pyro guest agent.
//!
//! Transport: a byte stream (virtio-serial port, Firecracker vsock, or the supervisor's Unix
//! socket). Framing: 4-byte big-endian length prefix ([`tokio_util::codec::LengthDelimitedCodec`])
//! around one frame: an 8-byte big-endian request id, then one MessagePack-encoded [`Request`]
//! or [`Response`] (field names kept, so adding optional fields stays compatible).
//!
//! Why the id sits in a fixed header: the supervisor routes the guest's answers to whoever
//! asked by reading 8 bytes, never decoding (and allocating for) a body the guest chose.
//!
//! Every request carries an `id` chosen by the sender; the response echoes it. Requests are
//! served concurrently, so responses may come back in any order. The guest agent sends one
//! unsolicited [`Response::Ready`] with id [`READY_FRAME_ID`] as soon as it owns the channel.
//!
//! The guest is hostile: every body is checked by [`check_bounds`] (element count, nesting
//! depth, declared lengths against the bytes present) before anything is allocated for it.

pub mod command;
pub mod exec;
pub mod fs;
pub mod session;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio_util::codec::LengthDelimitedCodec;

/// Bumped on any incompatible change to the types below or to the framing.
/// 2: request id moved out of the MessagePack body into a fixed 8-byte header.
pub const PROTOCOL_VERSION: u32 = 2;
/// Name of the virtio-serial port the agent listens on (QEMU backend).
pub const AGENT_PORT_NAME: &str = "org.pyro.agent";
/// vsock port of the agent (Firecracker backend).
pub const AGENT_VSOCK_PORT: u32 = 5005;
/// Request id used by the agent's unsolicited ready frame.
pub const READY_FRAME_ID: u64 = 0;
/// Id of frames no request waits for (the ready frame, benchmark filler): never allocated to
/// a request, so a router drops them after reading the header.
pub const UNROUTED_FRAME_ID: u64 = READY_FRAME_ID;
/// Bytes of the length prefix in front of every frame on the wire.
pub const FRAME_LENGTH_BYTES: usize = 4;
/// Default per-stream cap on captured exec output.
pub const DEFAULT_OUTPUT_CAP_BYTES: u64 = 16 * 1024 * 1024;
/// Largest frame either side accepts. The biggest legitimate frame is an exec answer with
/// both streams at the 16 MiB cap; everything else moves in chunks of at most
/// [`fs::TRANSFER_CHUNK_BYTES`]. The rest is headroom for field names and small fields.
pub const MAX_FRAME_BYTES: usize = 2 * DEFAULT_OUTPUT_CAP_BYTES as usize + 8 * 1024 * 1024;
/// Bytes of the id header in front of every frame body.
pub const FRAME_ID_BYTES: usize = 8;
/// Most MessagePack values (every map key, map value, array element and scalar counts) one
/// frame body may hold. An empty string costs 1 byte on the wire but ~24-48 in memory once
/// decoded, so element count, not frame size, bounds what decoding allocates. One million
/// covers a recursive listing of ~100k files (9 values per entry).
pub const MAX_FRAME_ITEMS: usize = 1_000_000;
/// Deepest nesting of arrays and maps in a frame body; the real protocol uses fewer than 8.
pub const MAX_FRAME_DEPTH: usize = 32;

/// The framing codec both sides use.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME_BYTES).new_codec()
}

/// Why a frame could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The value could not be serialized to MessagePack.
    #[error("could not encode frame: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The body passed the bounds check but is not a valid encoding of the expected type
    /// (an unknown request from a newer peer, or garbage from a hostile one).
    #[error("could not decode frame: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The frame was refused before decoding: no id header, or a body outside the limits
    /// [`check_bounds`] enforces. The message says which limit.
    #[error("refused frame: {0}")]
    Refused(String),
}

/// A frame type: how it is written to and read from the wire.
pub trait Frame: Sized {
    /// The id header followed by the MessagePack body, ready for the length-prefix codec.
    fn encode_frame(&self) -> Result<bytes::Bytes, ProtocolError>;
    /// Read one frame (without its length prefix); implementations bounds-check the body
    /// before decoding it.
    fn decode_frame(buf: &[u8]) -> Result<Self, ProtocolError>;
    /// The frame as it goes on the wire: length prefix, id header and body in one buffer,
    /// exactly what [`codec`] writes for [`Frame::encode_frame`]'s bytes. A writer that sends
    /// this as it is copies a large payload once (into this buffer) instead of twice.
    fn encode_wire(&self) -> Result<bytes::Bytes, ProtocolError>;
}

/// Serialize a frame (use with the codec from [`codec`]).
pub fn encode<F: Frame>(frame: &F) -> Result<bytes::Bytes, ProtocolError> {
    frame.encode_frame()
}

/// Deserialize a frame; the body is bounds-checked before it is decoded.
pub fn decode<F: Frame>(buf: &[u8]) -> Result<F, ProtocolError> {
    F::decode_frame(buf)
}

/// Header + MessagePack body of any serializable body (also for tests that need frames the
/// typed API cannot express).
pub fn encode_with_id<T: Serialize>(id: u64, body: &T) -> Result<bytes::Bytes, ProtocolError> {
    encode_into(Vec::with_capacity(64), id, body).map(Into::into)
}

/// Header + body appended to `out`, which is sized by the caller for the payload it knows of
/// (so a multi-MiB payload is written once, never re-copied by the buffer growing).
fn encode_into<T: Serialize>(mut out: Vec<u8>, id: u64, body: &T) -> Result<Vec<u8>, ProtocolError> {
    out.extend_from_slice(&id.to_be_bytes());
    rmp_serde::encode::write_named(&mut out, body)?;
    Ok(out)
}

/// Room for field names, tags and small fields around a frame's bulk bytes.
const FRAME_SLACK_BYTES: usize = 1024;

/// Length prefix + header + body in one buffer (see [`Frame::encode_wire`]). Refuses a frame
/// the peer's codec would refuse.
fn encode_wire_with_id<T: Serialize>(id: u64, body: &T, bulk_bytes: usize) -> Result<bytes::Bytes, ProtocolError> {
    let mut out = Vec::with_capacity(FRAME_LENGTH_BYTES + FRAME_ID_BYTES + bulk_bytes + FRAME_SLACK_BYTES);
    out.extend_from_slice(&[0; FRAME_LENGTH_BYTES]);
    let mut out = encode_into(out, id, body)?;
    let len = out.len() - FRAME_LENGTH_BYTES;
    if len > MAX_FRAME_BYTES {
        return Err(ProtocolError::Refused(format!("a frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")));
    }
    out[..FRAME_LENGTH_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out.into())
}

/// The id of a frame, read from its header without looking at the body.
pub fn frame_id(buf: &[u8]) -> Option<u64> {
    let head: [u8; FRAME_ID_BYTES] = buf.get(..FRAME_ID_BYTES)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

/// Rewrite the id of a frame in place (the supervisor maps agent ids to client ids this
/// way, forwarding the body untouched). False if the frame has no header.
pub fn set_frame_id(buf: &mut [u8], id: u64) -> bool {
    match buf.get_mut(..FRAME_ID_BYTES) {
        Some(head) => {
            head.copy_from_slice(&id.to_be_bytes());
            true
        }
        None => false,
    }
}

/// The `type` of a request body, read from its first map entry without decoding the rest
/// (where [`encode`] puts it). Lets a router forward a large request untouched: `None` for
/// anything else, which then goes the decoding way.
pub fn request_type(body: &[u8]) -> Option<&str> {
    let mut rest = body;
    rmp::decode::read_map_len(&mut rest).ok().filter(|n| *n > 0)?;
    let (key, rest) = rmp::decode::read_str_from_slice(rest).ok()?;
    if key != "type" {
        return None;
    }
    rmp::decode::read_str_from_slice(rest).ok().map(|(value, _)| value)
}

fn split_frame(buf: &[u8]) -> Result<(u64, &[u8]), ProtocolError> {
    let id = frame_id(buf)
        .ok_or_else(|| ProtocolError::Refused(format!("{} bytes is shorter than the frame header", buf.len())))?;
    let body = &buf[FRAME_ID_BYTES..];
    check_bounds(body).map_err(ProtocolError::Refused)?;
    Ok((id, body))
}

/// Walk a MessagePack body without allocating and refuse it if it holds more than
/// [`MAX_FRAME_ITEMS`] values, nests deeper than [`MAX_FRAME_DEPTH`], declares a length
/// past its end, or is followed by trailing bytes. Decoding a body that passed allocates at
/// most a bounded multiple of its size.
pub fn check_bounds(body: &[u8]) -> Result<(), String> {
    check_bounds_with(body, MAX_FRAME_ITEMS, MAX_FRAME_DEPTH)
}

fn check_bounds_with(body: &[u8], max_items: usize, max_depth: usize) -> Result<(), String> {
    use rmp::Marker;
    let mut pos = 0usize;
    let mut items = 0usize;
    // Values still expected at each open array/map level; the outermost level expects one.
    let mut open: Vec<u64> = vec![1];
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], String> {
        let end = pos.checked_add(n).filter(|&e| e <= body.len()).ok_or_else(|| {
            format!("a value declares {n} bytes at offset {} but the frame ends at {}", *pos, body.len())
        })?;
        let s = &body[*pos..end];
        *pos = end;
        Ok(s)
    };
    let len_of = |bytes: &[u8]| bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    while let Some(left) = open.last_mut() {
        if *left == 0 {
            open.pop();
            continue;
        }
        *left -= 1;
        items += 1;
        if items > max_items {
            return Err(format!("more than {max_items} values in one frame"));
        }
        let marker = Marker::from_u8(take(&mut pos, 1)?[0]);
        // (bytes to skip, values contained)
        let (skip, children): (u64, u64) = match marker {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => (0, 0),
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(n) => (u64::from(n), 0),
            Marker::Str8 | Marker::Bin8 => (len_of(take(&mut pos, 1)?), 0),
            Marker::Str16 | Marker::Bin16 => (len_of(take(&mut pos, 2)?), 0),
            Marker::Str32 | Marker::Bin32 => (len_of(take(&mut pos, 4)?), 0),
            Marker::FixArray(n) => (0, u64::from(n)),
            Marker::Array16 => (0, len_of(take(&mut pos, 2)?)),
            Marker::Array32 => (0, len_of(take(&mut pos, 4)?)),
            Marker::FixMap(n) => (0, 2 * u64::from(n)),
            Marker::Map16 => (0, 2 * len_of(take(&mut pos, 2)?)),
            Marker::Map32 => (0, 2 * len_of(take(&mut pos, 4)?)),
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (len_of(take(&mut pos, 1)?) + 1, 0),
            Marker::Ext16 => (len_of(take(&mut pos, 2)?) + 1, 0),
            Marker::Ext32 => (len_of(take(&mut pos, 4)?) + 1, 0),
            Marker::Reserved => return Err(format!("reserved MessagePack marker at offset {}", pos - 1)),
        };
        take(&mut pos, usize::try_from(skip).unwrap_or(usize::MAX))?;
        if children > 0 {
            // Every value takes at least one byte: a count past the bytes left is a lie,
            // refused here before serde sizes anything by it.
            if children > (body.len() - pos) as u64 {
                return Err(format!(
                    "a collection declares {children} values but only {} bytes follow",
                    body.len() - pos
                ));
            }
            if open.len() >= max_depth {
                return Err(format!("collections nested deeper than {max_depth} levels"));
            }
            open.push(children);
        }
    }
    if pos != body.len() {
        return Err(format!("{} trailing bytes after the frame body", body.len() - pos));
    }
    Ok(())
}

/// Only the id of a frame: lets a receiver answer a request it cannot decode.
#[derive(Debug, Clone)]
pub struct FrameId {
    /// The id from the frame header.
    pub id: u64,
}

impl Frame for FrameId {
    fn encode_frame(&self) -> Result<bytes::Bytes, ProtocolError> {
        Err(ProtocolError::Refused("a bare frame id has no body to send".into()))
    }
    fn decode_frame(buf: &[u8]) -> Result<Self, ProtocolError> {
        frame_id(buf)
            .map(|id| FrameId { id })
            .ok_or_else(|| ProtocolError::Refused(format!("{} bytes is shorter than the frame header", buf.len())))
    }
    fn encode_wire(&self) -> Result<bytes::Bytes, ProtocolError> {
        self.encode_frame()
    }
}

/// A request with the id its answer will carry.
#[derive(Debug, Clone)]
pub struct RequestFrame {
    /// Chosen by the sender, unique among its requests in flight.
    pub id: u64,
    /// What is asked.
    pub request: Request,
}

/// A response with the id of the request it answers ([`READY_FRAME_ID`] for the
/// unsolicited [`Response::Ready`]).
#[derive(Debug, Clone)]
pub struct ResponseFrame {
    /// The id of the request answered.
    pub id: u64,
    /// The answer.
    pub response: Response,
}

impl Frame for RequestFrame {
    fn encode_frame(&self) -> Result<bytes::Bytes, ProtocolError> {
        encode_into(
            Vec::with_capacity(FRAME_ID_BYTES + self.request.bulk_bytes() + FRAME_SLACK_BYTES),
            self.id,
            &self.request,
        )
        .map(Into::into)
    }
    fn encode_wire(&self) -> Result<bytes::Bytes, ProtocolError> {
        encode_wire_with_id(self.id, &self.request, self.request.bulk_bytes())
    }
    fn decode_frame(buf: &[u8]) -> Result<Self, ProtocolError> {
        let (id, body) = split_frame(buf)?;
        Ok(RequestFrame { id, request: rmp_serde::from_slice(body)? })
    }
}

impl Frame for ResponseFrame {
    fn encode_frame(&self) -> Result<bytes::Bytes, ProtocolError> {
        encode_into(
            Vec::with_capacity(FRAME_ID_BYTES + self.response.bulk_bytes() + FRAME_SLACK_BYTES),
            self.id,
            &self.response,
        )
        .map(Into::into)
    }
    fn encode_wire(&self) -> Result<bytes::Bytes, ProtocolError> {
        encode_wire_with_id(self.id, &self.response, self.response.bulk_bytes())
    }
    fn decode_frame(buf: &[u8]) -> Result<Self, ProtocolError> {
        let (id, body) = split_frame(buf)?;
        Ok(ResponseFrame { id, response: rmp_serde::from_slice(body)? })
    }
}

impl ResponseFrame {
    /// [`Frame::encode_wire`] in two parts for a response whose bulk bytes are its last field
    /// (`Echo`, `Fs(Data)`): the head (length prefix, id header and everything before the
    /// bytes) and the bytes themselves, taken as they are. Written one after the other they
    /// are exactly the wire frame, and the payload is never copied into an encoding buffer.
    /// Any other response comes whole in the head, with an empty payload.
    pub fn into_wire_parts(self) -> Result<(bytes::Bytes, Vec<u8>), ProtocolError> {
        let ResponseFrame { id, mut response } = self;
        let payload = match &mut response {
            Response::Echo { data } | Response::Fs(fs::FsResponse::Data { data }) => std::mem::take(data),
            _ => return Ok((ResponseFrame { id, response }.encode_wire()?, Vec::new())),
        };
        let refused = |len: usize| {
            ProtocolError::Refused(format!("a frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"))
        };
        if payload.len() > MAX_FRAME_BYTES {
            return Err(refused(payload.len()));
        }
        // Encoded with empty bytes, the body ends in the empty bin's header: swap it for the
        // header of the real length (the same marker choice the encoder makes).
        const EMPTY_BIN: [u8; 2] = [0xc4, 0x00];
        let mut head = encode_into(vec![0; FRAME_LENGTH_BYTES], id, &response)?;
        if !head.ends_with(&EMPTY_BIN) {
            return Err(ProtocolError::Refused("the bulk bytes are not the last field".into()));
        }
        head.truncate(head.len() - EMPTY_BIN.len());
        rmp::encode::write_bin_len(&mut head, payload.len() as u32)
            .map_err(|e| ProtocolError::Encode(rmp_serde::encode::Error::InvalidValueWrite(e)))?;
        let len = head.len() - FRAME_LENGTH_BYTES + payload.len();
        if len > MAX_FRAME_BYTES {
            return Err(refused(len));
        }
        head[..FRAME_LENGTH_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
        Ok((head.into(), payload))
    }
}

/// What the host asks of the guest agent (or, for [`Request::Supervisor`], of the VM's
/// supervisor).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Version handshake; the first request a host sends.
    Hello {
        /// The host's [`PROTOCOL_VERSION`]; the agent refuses a different one.
        protocol_version: u32,
        /// The host's crate version, for diagnostics.
        host_version: String,
    },
    /// Liveness check.
    Ping,
    /// Send `data` back unchanged: measures the raw channel (benchmarks, diagnostics).
    Echo {
        /// Bytes to send back.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Run a shell command.
    Exec(ExecRequest),
    /// Cancel a running request (kills an exec's process group). Answered with `Ok`.
    Cancel {
        /// The id of the request to cancel.
        request_id: u64,
    },
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
    /// Background commands.
    Command(command::CommandRequest),
    /// Measurements of the channel and the guest itself (benchmarks, diagnostics).
    Bench(BenchRequest),
    /// The guest was just restored from a memory state (a resume, a fork or a warm start):
    /// it is a new machine now. The agent sets the wall clock from the host, mixes fresh host
    /// entropy into the kernel RNG and forces a reseed (two guests restored from one state
    /// never produce the same random bytes), and sets the hostname when one is given.
    /// Answered with [`Response::Hello`] (the agent's identity) once all that is done.
    Restored {
        /// The host's wall clock (Unix time in milliseconds) when the request was sent.
        host_unix_ms: u64,
        /// Fresh bytes from the host's `getrandom` (at least [`MIN_RESTORE_ENTROPY_BYTES`],
        /// at most [`MAX_RESTORE_ENTROPY_BYTES`]).
        #[serde(with = "serde_bytes")]
        entropy: Vec<u8>,
        /// The new hostname, if the machine takes one (at most 64 bytes).
        hostname: Option<String>,
    },
}

/// Fewest entropy bytes a [`Request::Restored`] carries (256 bits: a full reseed).
pub const MIN_RESTORE_ENTROPY_BYTES: usize = 32;
/// Most entropy bytes the agent accepts in one [`Request::Restored`].
pub const MAX_RESTORE_ENTROPY_BYTES: usize = 4096;

/// Most filler bytes one [`BenchRequest::Blast`] may ask for.
pub const MAX_BLAST_BYTES: u64 = 1024 * 1024 * 1024;
/// Most commands one [`BenchRequest::ExecCost`] may run.
pub const MAX_EXEC_COST_RUNS: u32 = 1000;

/// Measurements for the benchmarks: each gives a baseline (the raw transport, the guest's own
/// cost of a command) measured in the same run as what pyro adds on top. All are bounded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BenchRequest {
    /// The raw guest-to-host stream, like `dd` from the port: the agent builds one frame of
    /// `frame_bytes` filler once, writes it `frames` times straight to the transport (id
    /// [`UNROUTED_FRAME_ID`], nothing encoded per frame), then answers
    /// [`BenchResponse::Blasted`]. `frame_bytes` at most [`fs::TRANSFER_CHUNK_BYTES`], the
    /// total at most [`MAX_BLAST_BYTES`].
    Blast {
        /// How many frames to write.
        frames: u32,
        /// Size of each frame's filler.
        frame_bytes: u32,
    },
    /// The in-guest cost of a command: run it `runs` times (at most [`MAX_EXEC_COST_RUNS`])
    /// exactly as [`Request::Exec`] does (same spawn, capture and wait) in `cwd`, timing each
    /// from spawn to result inside the guest. Answer: [`BenchResponse::ExecCost`].
    ExecCost {
        /// The shell command (`sh -lc`), as an exec would run it.
        command: String,
        /// Working directory in the guest; the agent's default if `None`.
        cwd: Option<String>,
        /// How many times to run it.
        runs: u32,
    },
    /// The channel host-to-guest: `data` is received and dropped. Answer:
    /// [`BenchResponse::Received`] with how long the agent took to take this frame off the
    /// transport, from its length prefix to its last byte (the raw host-to-guest stream, like
    /// `cat` of the port; 0 where the transport does not measure it).
    Sink {
        /// Bytes to receive and drop.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

/// Answers to [`BenchRequest`]s, measured inside the guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BenchResponse {
    /// Filler bytes written and how long the writes took, measured in the guest.
    Blasted {
        /// Filler bytes written.
        bytes: u64,
        /// Time the writes took, in microseconds.
        write_us: u64,
    },
    /// Per-run durations of [`BenchRequest::ExecCost`] in microseconds, in run order.
    ExecCost {
        /// Each run's spawn-to-result time, in microseconds.
        durations_us: Vec<u64>,
    },
    /// Bytes of a [`BenchRequest::Sink`] and the agent's receive time of its frame.
    Received {
        /// Bytes received.
        bytes: u64,
        /// Length prefix to last byte, in microseconds.
        receive_us: u64,
    },
}

/// Requests the per-VM supervisor answers itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SupervisorRequest {
    /// Describe the VM the supervisor owns.
    Status,
    /// Clean guest shutdown (sync + poweroff through the agent) with a bounded wait, then
    /// kill the VMM if it is still alive. The supervisor exits after answering.
    Shutdown {
        /// How long the guest gets to power off before the VMM is killed.
        timeout_ms: u64,
    },
    /// Forward host ports to guest ports for as long as `service` runs (all or none: on a
    /// refusal the ones already added are removed). Answered with `Ok` or an `Error`.
    Publish {
        /// The service whose life the forwards follow.
        service: String,
        /// The forwards to add.
        ports: Vec<PortForward>,
    },
    /// Remove these forwards (by host address and port); unknown ones are ignored.
    /// Answered with `Ok`.
    Unpublish {
        /// The forwards to remove.
        ports: Vec<PortForward>,
    },
    /// Save the guest's memory and device state into the VM directory (`memory.state`,
    /// then `memory.json`) and end the VM. New guest requests are refused (`invalid_state`)
    /// from now on; requests in flight get `timeout_ms` to finish, else the pause is
    /// abandoned and the VM keeps running. Answered with [`Response::Paused`] just before
    /// the supervisor exits, or with an `Error` (the VM still runs).
    Pause {
        /// How long requests in flight may take to finish.
        timeout_ms: u64,
    },
    /// Change the idle pause of a running VM (a workspace update): from now on the
    /// supervisor pauses the VM once no request has arrived for `after_ms` (0 = never),
    /// taking `lock_path` without waiting first, as at boot.
    SetIdlePause {
        /// Idle time before the pause, in milliseconds; 0 turns the idle pause off.
        after_ms: u64,
        /// The lock a call in progress holds (shared); the pause takes it exclusively.
        lock_path: String,
    },
}

/// One published port: TCP on `host:host_port` of the host reaches `guest_port` in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    /// Host address the forward listens on (always loopback today).
    pub host: String,
    /// Host TCP port.
    pub host_port: u16,
    /// Guest TCP port.
    pub guest_port: u16,
}

/// One command run to completion in the guest, its output captured.
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

/// What the guest agent (or the supervisor) answers. Coming from the guest, every field is
/// attacker input: the host bounds and validates it before use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Unsolicited, id 0: the agent owns the channel and serves requests.
    Ready {
        /// The agent's crate version.
        agent_version: String,
        /// The agent's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// Guest uptime when the agent became ready (kernel boot included).
        boot_ms: u64,
    },
    /// Answer to [`Request::Hello`].
    Hello(HelloInfo),
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to [`Request::Echo`].
    Echo {
        /// The bytes received.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The request succeeded and has nothing to report.
    Ok,
    /// Answer to [`Request::Exec`].
    Exec(ExecResult),
    /// Answer to [`SupervisorRequest::Status`].
    Supervisor(SupervisorStatus),
    /// Answer to a [`Request::Fs`].
    Fs(fs::FsResponse),
    /// Answer to a [`Request::Shell`].
    Shell(session::ShellResponse),
    /// Answer to a [`Request::Service`].
    Service(session::ServiceResponse),
    /// Answer to a [`Request::Command`].
    Command(command::CommandResponse),
    /// Answer to a [`Request::Bench`] (benchmarks only).
    Bench(BenchResponse),
    /// The request failed; any request may be answered this way.
    Error(ErrorInfo),
    /// Answer to [`SupervisorRequest::Pause`]: the state is saved and the VM ended.
    Paused {
        /// Size of the saved state file.
        state_bytes: u64,
        /// From the pause request to the state being durable, in milliseconds.
        pause_ms: u64,
    },
}

/// The agent's side of the version handshake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloInfo {
    /// The agent's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The agent's crate version.
    pub agent_version: String,
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
}

/// How an [`ExecRequest`] ended and what it printed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecResult {
    /// Captured standard output, at most the request's `output_cap_bytes`.
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    /// Captured standard error, at most the request's `output_cap_bytes`.
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    /// Standard output went past the cap; the rest was dropped.
    pub stdout_truncated: bool,
    /// Standard error went past the cap; the rest was dropped.
    pub stderr_truncated: bool,
    /// The shell's exit code (124 on timeout, 128 + signal when killed by one).
    pub exit_code: i32,
    /// The timeout fired and the process group was killed.
    pub timed_out: bool,
    /// Wall time in the guest from spawn to exit.
    pub duration_ms: u64,
}

/// What the supervisor reports about the VM it owns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorStatus {
    /// Pid of the supervisor process.
    pub supervisor_pid: u32,
    /// Pid of the VMM (QEMU) process the supervisor started.
    pub vmm_pid: u32,
    /// The backend from the launch spec, e.g. `qemu`.
    pub backend: String,
    /// The accelerator from the launch spec, e.g. `tcg` or `kvm`.
    pub accel: String,
    /// The version the agent announced in its ready frame.
    pub agent_version: String,
    /// Supervisor start to agent ready.
    pub ready_ms: u64,
    /// `running`, or `pausing` while its memory is being saved (a supervisor that answers
    /// owns a live VM).
    pub state: String,
}

/// A failed request: a stable kind for code, a message for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorInfo {
    /// Stable machine-readable kind, e.g. `bad_request`, `unsupported`, `io`, `cancelled`.
    pub kind: ErrorKind,
    /// What went wrong, for a person.
    pub message: String,
}

/// What went wrong, as the agent (or the supervisor) classifies it. On the wire it is the
/// snake_case string (`not_found`, `invalid_path`, ...) it always was, so older and newer
/// agents and hosts understand each other; a kind this build does not know decodes as
/// [`ErrorKind::Other`] with its text kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ErrorKind {
    /// The request could not be decoded or its arguments are invalid.
    BadRequest,
    /// The request is not supported by whoever received it.
    Unsupported,
    /// A guest path is malformed, escapes its root or crosses a non-directory.
    InvalidPath,
    /// The file type is not one the operation handles (device, socket, ...).
    UnsupportedType,
    /// The path, shell, service or transfer does not exist.
    NotFound,
    /// Something is already there.
    Exists,
    /// The object is in the wrong state for the operation.
    InvalidState,
    /// An answer or request was over a size limit.
    TooLarge,
    /// The command could not be started.
    SpawnFailed,
    /// The request was cancelled.
    Cancelled,
    /// An I/O error in the guest.
    Io,
    /// The VM ended while the request was waiting.
    VmExited,
    /// The guest's answer could not be decoded.
    BadResponse,
    /// A kind this build does not know (kept verbatim).
    Other(String),
}

impl ErrorKind {
    /// The wire string of this kind.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidPath => "invalid_path",
            ErrorKind::UnsupportedType => "unsupported_type",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Exists => "exists",
            ErrorKind::InvalidState => "invalid_state",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::SpawnFailed => "spawn_failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Io => "io",
            ErrorKind::VmExited => "vm_exited",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::Other(s) => s,
        }
    }
}

impl Request {
    /// Bytes of bulk payload (byte buffers) this request carries: sizes its encoding buffer.
    pub fn bulk_bytes(&self) -> usize {
        match self {
            Request::Echo { data } | Request::Bench(BenchRequest::Sink { data }) => data.len(),
            Request::Fs(fs::FsRequest::UploadChunk { data, .. } | fs::FsRequest::Write { data, .. }) => data.len(),
            _ => 0,
        }
    }
}

impl From<&str> for ErrorKind {
    fn from(s: &str) -> Self {
        match s {
            "bad_request" => ErrorKind::BadRequest,
            "unsupported" => ErrorKind::Unsupported,
            "invalid_path" => ErrorKind::InvalidPath,
            "unsupported_type" => ErrorKind::UnsupportedType,
            "not_found" => ErrorKind::NotFound,
            "exists" => ErrorKind::Exists,
            "invalid_state" => ErrorKind::InvalidState,
            "too_large" => ErrorKind::TooLarge,
            "spawn_failed" => ErrorKind::SpawnFailed,
            "cancelled" => ErrorKind::Cancelled,
            "io" => ErrorKind::Io,
            "vm_exited" => ErrorKind::VmExited,
            "bad_response" => ErrorKind::BadResponse,
            other => ErrorKind::Other(other.to_string()),
        }
    }
}

impl From<String> for ErrorKind {
    fn from(s: String) -> Self {
        ErrorKind::from(s.as_str())
    }
}

impl From<ErrorKind> for String {
    fn from(k: ErrorKind) -> Self {
        k.as_str().to_string()
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Response {
    /// Bytes of bulk payload (byte buffers) this response carries: sizes its encoding buffer.
    pub fn bulk_bytes(&self) -> usize {
        match self {
            Response::Echo { data } => data.len(),
            Response::Exec(r) => r.stdout.len() + r.stderr.len(),
            Response::Fs(fs::FsResponse::Data { data } | fs::FsResponse::FileData { data, .. }) => data.len(),
            _ => 0,
        }
    }

    /// A [`Response::Error`] of `kind` (see [`ErrorInfo::kind`]).
    pub fn error(kind: impl Into<ErrorKind>, message: impl Into<String>) -> Self {
        Response::Error(ErrorInfo { kind: kind.into(), message: message.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ErrorInfo` as agents before the enum sent and read it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct StringlyErrorInfo {
        kind: String,
        message: String,
    }

    #[test]
    fn error_kinds_travel_as_the_strings_they_always_were() {
        for kind in ["not_found", "invalid_path", "bad_request", "cancelled", "vm_exited", "too_large", "quota"] {
            let old = StringlyErrorInfo { kind: kind.into(), message: "m".into() };
            let info: ErrorInfo = rmp_serde::from_slice(&rmp_serde::to_vec_named(&old).unwrap()).unwrap();
            assert_eq!(info.kind.as_str(), kind);
            assert_eq!(matches!(info.kind, ErrorKind::Other(_)), kind == "quota", "{kind}");
            let back: StringlyErrorInfo = rmp_serde::from_slice(&rmp_serde::to_vec_named(&info).unwrap()).unwrap();
            assert_eq!(back, old);
        }
    }

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
        let mut req = BTreeMap::new();
        req.insert("type".to_string(), "teleport".to_string());
        let bytes = encode_with_id(42, &req).unwrap();
        assert!(decode::<RequestFrame>(&bytes).is_err());
        assert_eq!(decode::<FrameId>(&bytes).unwrap().id, 42);
    }

    fn refused(body: &[u8]) -> String {
        let mut frame = 5u64.to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        match decode::<ResponseFrame>(&frame) {
            Err(ProtocolError::Refused(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn many_empty_strings_are_refused_before_decoding() {
        // A services list of 2M empty names: 5 MiB on the wire, ~100 MiB once decoded.
        let n = 2_000_000u32;
        let mut body = vec![0x82, 0xa4];
        body.extend_from_slice(b"type");
        body.push(0xa7);
        body.extend_from_slice(b"service");
        body[0] = 0x83;
        body.push(0xa4);
        body.extend_from_slice(b"kind");
        body.push(0xa4);
        body.extend_from_slice(b"list");
        body.push(0xa8);
        body.extend_from_slice(b"services");
        body.push(0xdd);
        body.extend_from_slice(&n.to_be_bytes());
        body.extend(std::iter::repeat_n(0xa0, n as usize));
        let msg = refused(&body);
        assert!(msg.contains("more than 1000000 values"), "{msg}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut body = vec![0x91; 10_000];
        body.push(0xc0);
        let msg = refused(&body);
        assert!(msg.contains("nested deeper than 32"), "{msg}");
    }

    #[test]
    fn declared_lengths_past_the_end_are_refused() {
        // array32 of u32::MAX elements, then nothing.
        assert!(refused(&[0xdd, 0xff, 0xff, 0xff, 0xff]).contains("declares 4294967295 values"));
        // bin32 of u32::MAX bytes.
        assert!(refused(&[0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2]).contains("declares 4294967295 bytes"));
        assert!(refused(&[0xc1]).contains("reserved"));
        assert!(refused(&[0xc0, 0xc0]).contains("trailing"));
        let short = decode::<ResponseFrame>(&[1, 2, 3]).unwrap_err().to_string();
        assert!(short.contains("shorter than the frame header"), "{short}");
    }

    #[test]
    fn wire_encoding_is_what_the_codec_writes() {
        use tokio_util::codec::{Decoder, Encoder};
        for response in [Response::Pong, Response::Echo { data: vec![7; 300_000] }] {
            let frame = ResponseFrame { id: 77, response };
            let body = encode(&frame).unwrap();
            let mut via_codec = bytes::BytesMut::new();
            codec().encode(body.clone(), &mut via_codec).unwrap();
            let wire = frame.encode_wire().unwrap();
            assert_eq!(&wire[..], &via_codec[..]);
            let mut stream = bytes::BytesMut::from(&wire[..]);
            let back = codec().decode(&mut stream).unwrap().unwrap();
            assert_eq!(&back[..], &body[..]);
        }
        let request = RequestFrame { id: 3, request: Request::Echo { data: vec![1; 1000] } };
        let wire = request.encode_wire().unwrap();
        assert_eq!(u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize, wire.len() - 4);
        assert_eq!(&wire[4..], &encode(&request).unwrap()[..]);
    }

    #[test]
    fn request_type_is_read_without_decoding() {
        let body = |request: Request| encode(&RequestFrame { id: 1, request }).unwrap()[FRAME_ID_BYTES..].to_vec();
        assert_eq!(request_type(&body(Request::Ping)), Some("ping"));
        assert_eq!(request_type(&body(Request::Echo { data: vec![1; 100] })), Some("echo"));
        let status = Request::Supervisor(SupervisorRequest::Status);
        assert_eq!(request_type(&body(status)), Some("supervisor"));
        assert_eq!(request_type(&[]), None);
        assert_eq!(request_type(&[0x80]), None);
        assert_eq!(request_type(&[0x81, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g']), None);
        assert_eq!(request_type(&[0x81, 0xa4, b't', b'y', b'p', b'e', 0xdb, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn wire_parts_are_the_wire_frame_without_copying_the_payload() {
        for len in [0usize, 10, 300, 70_000, 4 << 20] {
            for response in
                [Response::Echo { data: vec![9; len] }, Response::Fs(fs::FsResponse::Data { data: vec![3; len] })]
            {
                let frame = ResponseFrame { id: 12, response };
                let whole = frame.encode_wire().unwrap();
                let (head, payload) = frame.into_wire_parts().unwrap();
                assert_eq!(payload.len(), len);
                assert_eq!([&head[..], &payload[..]].concat(), whole.to_vec());
            }
        }
        let (head, payload) = ResponseFrame { id: 1, response: Response::Pong }.into_wire_parts().unwrap();
        assert!(payload.is_empty());
        assert_eq!(head, ResponseFrame { id: 1, response: Response::Pong }.encode_wire().unwrap());
        let big = ResponseFrame { id: 1, response: Response::Echo { data: vec![0; MAX_FRAME_BYTES] } };
        assert!(matches!(big.into_wire_parts(), Err(ProtocolError::Refused(_))));
    }

    #[test]
    fn a_wire_frame_past_the_limit_is_refused_before_sending() {
        let frame = ResponseFrame { id: 1, response: Response::Echo { data: vec![0; MAX_FRAME_BYTES] } };
        assert!(matches!(frame.encode_wire(), Err(ProtocolError::Refused(m)) if m.contains("exceeds")));
    }

    #[test]
    fn real_frames_pass_the_bounds_check_and_ids_are_rewritable() {
        let frame = ResponseFrame { id: 3, response: Response::Pong };
        let mut bytes = encode(&frame).unwrap().to_vec();
        assert_eq!(frame_id(&bytes), Some(3));
        assert!(set_frame_id(&mut bytes, 99));
        let back: ResponseFrame = decode(&bytes).unwrap();
        assert_eq!(back.id, 99);
        assert!(matches!(back.response, Response::Pong));
    }
}
