//! The hostile test agent (feature `hostile`, binary `pyro-hostile-agent`): the real agent,
//! booted the real way, that turns on the host when asked. An exec of
//! `pyro-hostile:<scenario>[:<arg>]` switches the scenario (`pyro-hostile:off` ends it);
//! from then on it answers the host's requests with crafted frames. `Hello`, `Sync`,
//! `Poweroff` and `Cancel` stay honest (except under `drip`, where they go unanswered) so the
//! host can always stop the VM.
//!
//! Scenarios:
//! - `names:<abs>`: service, shell, file-list and export answers full of path-traversal names
//!   (`../../../../canary`, `<abs>`, `a/../../b`, NUL bytes).
//! - `export-size:<n|max>`: an export that claims `n` bytes (max = u64::MAX) and whose reads
//!   never end.
//! - `export-long`: an export that claims 1000 bytes and answers each read with 4 MiB.
//! - `flood:strings|deep|lie`: a ~30 MiB frame of empty strings, 30 M nested arrays, or a
//!   collection declaring 4 G elements.
//! - `wrong-ids`: every answer carries an id the host never used.
//! - `duplicate-ids`: an unknown id first, then the real answer twice.
//! - `drip`: answers trickle out one byte every 200 ms.
//! - `silence`: no answer at all.
//! - `stdout:<MiB>`: exec answers with that much stdout, ignoring the requested cap (sent raw,
//!   past the frame limit if asked).
//! - `bad-length`: a frame header declaring 4 GiB.

use crate::serve::{send, OutTx, Outgoing};
use bytes::Bytes;
use pyro_protocol::fs::{FileEntry, FsRequest, FsResponse};
use pyro_protocol::session::{
    ServiceRequest, ServiceResponse, ServiceState, ServiceStatus, ShellRequest, ShellResponse,
};
use pyro_protocol::{encode_with_id, ExecResult, Request, Response};
use std::sync::Mutex;
use std::time::Duration;

static SCENARIO: Mutex<Option<(String, String)>> = Mutex::new(None);
static DRIP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PREFIX: &str = "pyro-hostile:";

/// Answer `request` the hostile way if a scenario is on. True when it was handled here.
pub fn intercept(id: u64, request: &Request, out: &OutTx) -> bool {
    if let Request::Exec(e) = request {
        if let Some(spec) = e.command.trim().strip_prefix(PREFIX) {
            let (name, arg) = spec.split_once(':').unwrap_or((spec, ""));
            *SCENARIO.lock().unwrap() = (name != "off").then(|| (name.to_string(), arg.to_string()));
            send(out, id, Response::Exec(exec_result(format!("hostile scenario {name}\n").into_bytes())));
            return true;
        }
    }
    let Some((name, arg)) = SCENARIO.lock().unwrap().clone() else { return false };
    // A frame being trickled must not be interleaved with other answers (the Cancel the host
    // sends when it gives up, the Sync and Poweroff of a stop): those get no answer at all.
    if name == "drip" && matches!(request, Request::Cancel { .. } | Request::Sync | Request::Poweroff) {
        return true;
    }
    if matches!(request, Request::Hello { .. } | Request::Sync | Request::Poweroff | Request::Cancel { .. }) {
        return false;
    }
    match name.as_str() {
        "names" => return names(id, request, &arg, out),
        "export-size" => return export(id, request, out, arg.parse().unwrap_or(u64::MAX), None),
        "export-long" => return export(id, request, out, 1000, Some(4 << 20)),
        "flood" => out_raw_frame(out, id, flood_body(&arg)),
        "wrong-ids" => send(out, id ^ (1 << 40), Response::Exec(exec_result(b"wrong id\n".to_vec()))),
        "duplicate-ids" => {
            let answer = Response::Exec(exec_result(b"duplicate\n".to_vec()));
            send(out, id + 1_000_000, answer.clone());
            send(out, id, answer.clone());
            send(out, id, answer);
        }
        "drip" => {
            let frame = length_prefixed(encode_with_id(id, &Response::Exec(exec_result(b"drip\n".to_vec()))).unwrap());
            let out = out.clone();
            tokio::spawn(async move {
                // One trickled frame at a time, or their bytes would interleave.
                let _one_at_a_time = DRIP.lock().await;
                for i in 0..frame.len() {
                    if out.send(Outgoing::Raw(frame.slice(i..i + 1))).is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        "silence" => {}
        "stdout" => {
            let mib: usize = arg.parse().unwrap_or(90);
            let mut r = exec_result(vec![b'x'; mib << 20]);
            r.stdout_truncated = false;
            let body = encode_with_id(id, &Response::Exec(r)).unwrap();
            let _ = out.send(Outgoing::Raw(length_prefixed(body)));
        }
        "bad-length" => {
            let _ = out.send(Outgoing::Raw(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0, 0])));
        }
        _ => return false,
    }
    true
}

fn exec_result(stdout: Vec<u8>) -> ExecResult {
    ExecResult {
        stdout,
        stderr: Vec::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        exit_code: 0,
        timed_out: false,
        duration_ms: 1,
    }
}

fn length_prefixed(body: Bytes) -> Bytes {
    let mut v = Vec::with_capacity(body.len() + 4);
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(&body);
    v.into()
}

/// A frame body (after the id header) with its length prefix, sent as it is.
fn out_raw_frame(out: &OutTx, id: u64, body: Vec<u8>) {
    let mut frame = id.to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let _ = out.send(Outgoing::Raw(length_prefixed(frame.into())));
}

/// `{type: service, kind: list, services: <payload>}` with a hostile payload.
fn flood_body(kind: &str) -> Vec<u8> {
    let mut b = vec![0x83];
    for (k, v) in [("type", "service"), ("kind", "list")] {
        push_str(&mut b, k);
        push_str(&mut b, v);
    }
    push_str(&mut b, "services");
    const N: u32 = 30_000_000;
    match kind {
        "deep" => {
            b.extend(std::iter::repeat_n(0x91, N as usize));
            b.push(0xc0);
        }
        "lie" => {
            b.push(0xdd);
            b.extend_from_slice(&u32::MAX.to_be_bytes());
            b.extend(std::iter::repeat_n(0xa0, 1000));
        }
        _ => {
            b.push(0xdd);
            b.extend_from_slice(&N.to_be_bytes());
            b.extend(std::iter::repeat_n(0xa0, N as usize));
        }
    }
    b
}

fn push_str(b: &mut Vec<u8>, s: &str) {
    b.push(0xa0 | s.len() as u8);
    b.extend_from_slice(s.as_bytes());
}

fn evil_names(abs: &str) -> Vec<String> {
    let mut names = vec!["../../../../canary".to_string(), "a/../../b".to_string(), "nul\0byte".to_string()];
    if !abs.is_empty() {
        names.push(abs.to_string());
    }
    names
}

fn service_state(name: &str) -> ServiceState {
    ServiceState {
        name: name.to_string(),
        command: "sleep 1000".into(),
        cwd: "/workspace".into(),
        state: ServiceStatus::Running,
        pid: Some(42),
        exit_code: None,
        readiness: None,
        started_at: 1.0,
        ready_at: Some(1.0),
        ended_at: None,
        stop_reason: None,
        readiness_error: None,
    }
}

fn names(id: u64, request: &Request, abs: &str, out: &OutTx) -> bool {
    let names = evil_names(abs);
    let response = match request {
        Request::Service(ServiceRequest::List) | Request::Service(ServiceRequest::StopAll { .. }) => {
            Response::Service(ServiceResponse::List { services: names.iter().map(|n| service_state(n)).collect() })
        }
        Request::Service(_) => Response::Service(ServiceResponse::State(service_state(&names[0]))),
        Request::Shell(ShellRequest::CloseAll) => Response::Shell(ShellResponse::Closed { shell_ids: names }),
        Request::Fs(FsRequest::List { .. }) => Response::Fs(FsResponse::Listing {
            path: "/workspace".into(),
            artifact_type: "directory".into(),
            entries: names
                .iter()
                .chain(std::iter::once(&"/workspace/ok.txt".to_string()))
                .map(|n| FileEntry { path: n.clone(), artifact_type: "file".into(), size_bytes: 1, link_target: None })
                .collect(),
        }),
        Request::Fs(FsRequest::Export { .. }) | Request::Fs(FsRequest::ReadTransfer { .. }) => {
            let tar = evil_tar(&names);
            match request {
                Request::Fs(FsRequest::ReadTransfer { offset, len, .. }) => {
                    let start = (*offset as usize).min(tar.len());
                    let end = (start + *len as usize).min(tar.len());
                    Response::Fs(FsResponse::Data { data: tar[start..end].to_vec() })
                }
                _ => Response::Fs(FsResponse::Exported {
                    transfer_id: "hostile".into(),
                    size: tar.len() as u64,
                    artifact_type: "directory".into(),
                    entry_count: names.len() as u64,
                    bytes_written: names.len() as u64,
                }),
            }
        }
        _ => return false,
    };
    send(out, id, response);
    true
}

/// A tar whose members carry the given names verbatim (plus `.txt`), which `tar::Header`'s
/// own setters would refuse.
fn evil_tar(names: &[String]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for n in names {
        let mut h = tar::Header::new_old();
        let raw = format!("{n}.txt");
        let len = raw.len().min(99);
        h.as_old_mut().name[..len].copy_from_slice(&raw.as_bytes()[..len]);
        h.set_size(6);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, &b"owned\n"[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn export(id: u64, request: &Request, out: &OutTx, size: u64, chunk: Option<usize>) -> bool {
    let response = match request {
        Request::Fs(FsRequest::Export { .. }) => Response::Fs(FsResponse::Exported {
            transfer_id: "hostile".into(),
            size,
            artifact_type: "directory".into(),
            entry_count: 1,
            bytes_written: size,
        }),
        Request::Fs(FsRequest::ReadTransfer { len, .. }) => {
            let n = chunk.unwrap_or((*len).min(4 << 20) as usize);
            Response::Fs(FsResponse::Data { data: vec![0; n] })
        }
        _ => return false,
    };
    send(out, id, response);
    true
}
