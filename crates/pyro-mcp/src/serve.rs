//! Transports: stdio (newline-delimited JSON-RPC) and Streamable HTTP.

use crate::token::{token_matches, HttpToken};
use crate::PyroMcp;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Longest stdin line accepted (a JSON-RPC message); longer lines get a `-32600` error and
/// are skipped without being held in memory.
pub const MAX_STDIO_LINE_BYTES: usize = 64 << 20;

/// Serve MCP on stdin/stdout until the client closes stdin. Ephemeral VMs this server made
/// are deleted on the way out.
///
/// Lines that are not JSON-RPC (not UTF-8, not JSON, too long, not a message) get a JSON-RPC
/// error response (`-32700` parse error, `-32600` invalid request) and the server keeps
/// serving; every other line goes to rmcp.
pub async fn serve_stdio(server: PyroMcp) -> std::io::Result<()> {
    let pyro = server.pyro().clone();
    let tasks = server.tasks.clone();
    let (to_rmcp, rmcp_in) = tokio::io::duplex(1 << 20);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(1 << 20);
    let (err_tx, mut err_rx) = tokio::sync::mpsc::unbounded_channel::<String>();

    // stdin -> rmcp, answering bad lines ourselves.
    let reader = tokio::spawn(async move {
        let mut to_rmcp = to_rmcp;
        let mut stdin = BufReader::new(tokio::io::stdin());
        while let Ok(Some(line)) = next_line(&mut stdin, MAX_STDIO_LINE_BYTES).await {
            let checked = match line {
                StdinLine::TooLong => Err(rpc_error(
                    serde_json::Value::Null,
                    -32600,
                    &format!("Invalid Request: line longer than {MAX_STDIO_LINE_BYTES} bytes"),
                )),
                StdinLine::Bytes(bytes) => match std::str::from_utf8(&bytes) {
                    Err(e) => Err(rpc_error(serde_json::Value::Null, -32700, &format!("Parse error: not UTF-8: {e}"))),
                    Ok(text) if text.trim().is_empty() => continue,
                    Ok(text) => check_line(text).map(|()| bytes),
                },
            };
            match checked {
                Ok(bytes) => {
                    if to_rmcp.write_all(&bytes).await.is_err() || to_rmcp.write_all(b"\n").await.is_err() {
                        break;
                    }
                }
                Err(response) => {
                    let _ = err_tx.send(response);
                }
            }
        }
        // Dropping `to_rmcp` closes rmcp's input: the service ends.
    });

    // rmcp + our error responses -> stdout, one whole line at a time.
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        let mut lines = BufReader::new(from_rmcp).lines();
        let mut errors_open = true;
        loop {
            let line = tokio::select! {
                l = lines.next_line() => match l { Ok(Some(l)) => l, _ => break },
                e = err_rx.recv(), if errors_open => match e { Some(e) => e, None => { errors_open = false; continue } },
            };
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.write_all(b"\n").await.is_err() {
                break;
            }
            let _ = stdout.flush().await;
        }
    });

    // Workspaces left half-created by an earlier, killed server are reaped before serving.
    pyro.sweep_orphans().await;
    let result = match server.serve((rmcp_in, rmcp_out)).await {
        Ok(running) => running.waiting().await.map(|_| ()).map_err(std::io::Error::other),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    };
    reader.abort();
    let _ = writer.await;
    tasks.end().await;
    pyro.delete_all_vms("server_shutdown").await;
    result
}

/// One line of stdin, without its newline.
#[derive(Debug, PartialEq)]
enum StdinLine {
    Bytes(Vec<u8>),
    /// Longer than the limit; its bytes were read and dropped up to the next newline.
    TooLong,
}

/// The next line of `input` as raw bytes (`None` at end of input), never holding more than
/// `max` bytes of it: the caller decides what invalid UTF-8 means instead of the reader
/// failing (which would end the server).
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    input: &mut R,
    max: usize,
) -> std::io::Result<Option<StdinLine>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let chunk = input.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Some(StdinLine::TooLong),
                (false, true) => None,
                (false, false) => Some(StdinLine::Bytes(line)),
            });
        }
        let (part, used, end) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        if !too_long && line.len() + part.len() <= max {
            line.extend_from_slice(part);
        } else {
            too_long = true;
            line = Vec::new();
        }
        input.consume(used);
        if end {
            return Ok(Some(if too_long { StdinLine::TooLong } else { StdinLine::Bytes(line) }));
        }
    }
}

/// `Ok` when the line is a JSON-RPC message rmcp should see; else the error response to send.
fn check_line(line: &str) -> Result<(), String> {
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Err(rpc_error(serde_json::Value::Null, -32700, &format!("Parse error: {e}"))),
    };
    let id = value.get("id").cloned().unwrap_or(serde_json::Value::Null);
    match serde_json::from_value::<rmcp::model::ClientJsonRpcMessage>(value) {
        Ok(_) => Ok(()),
        // A response to one of our (never sent) requests is harmless: let rmcp see it.
        Err(_) if id != serde_json::Value::Null && line.contains("\"result\"") => Ok(()),
        Err(e) => Err(rpc_error(id, -32600, &format!("Invalid Request: {e}"))),
    }
}

fn rpc_error(id: serde_json::Value, code: i64, message: &str) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

/// Options of the Streamable HTTP transport.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Address to listen on (loopback unless the operator says otherwise).
    pub addr: SocketAddr,
    /// Required on every request as `Authorization: Bearer TOKEN`
    /// (see [`crate::token::resolve_http_token`]).
    pub token: HttpToken,
}

/// Serve MCP over Streamable HTTP at `/mcp` until Ctrl-C / SIGTERM.
///
/// Every request needs the bearer token (401 otherwise), checked before anything else. A
/// non-loopback address is refused unless the operator chose the token explicitly. `Host`
/// must name a loopback address (or the bound one) *with the bound port* (403 otherwise:
/// DNS rebinding, and requests relayed from another port such as a guest's NAT); browser
/// `Origin`s other than `localhost` / `127.0.0.1` / `[::1]` are rejected (403).
pub async fn serve_http(server: PyroMcp, opts: HttpOptions, ready: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let pyro = server.pyro().clone();
    let tasks = server.tasks.clone();
    // Workspaces left half-created by an earlier, killed server are reaped before serving.
    pyro.sweep_orphans().await;
    let loopback = opts.addr.ip().is_loopback();
    if !loopback && !opts.token.explicit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "refusing to serve MCP on non-loopback address {} without a token chosen for it (--token-file or ${})",
                opts.addr,
                crate::token::TOKEN_ENV
            ),
        ));
    }
    let listener = tokio::net::TcpListener::bind(opts.addr).await?;
    let local = listener.local_addr()?;
    let port = local.port();
    let mut hosts = vec![format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")];
    if !loopback {
        hosts.push(local.to_string());
    }
    let ct = tokio_util::sync::CancellationToken::new();
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins([
            "http://localhost:*",
            "https://localhost:*",
            "http://127.0.0.1:*",
            "https://127.0.0.1:*",
            "http://[::1]:*",
            "https://[::1]:*",
        ])
        .with_cancellation_token(ct.child_token());
    let service =
        StreamableHttpService::new(move || Ok(server.clone()), Arc::new(LocalSessionManager::default()), config);
    let token = Arc::new(opts.token.value);
    let app = axum::Router::new().nest_service("/mcp", service).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let ok = req
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .is_some_and(|given| token_matches(given.as_bytes(), token.as_bytes()));
                if !ok {
                    return axum::response::IntoResponse::into_response((
                        axum::http::StatusCode::UNAUTHORIZED,
                        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                        "missing or wrong bearer token (`pyro mcp token` prints it)\n",
                    ));
                }
                next.run(req).await
            }
        },
    ));
    ready(local);
    let shutdown = async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        ct.cancel();
    };
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    tasks.end().await;
    pyro.delete_all_vms("server_shutdown").await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_get_json_rpc_errors() {
        let e: serde_json::Value = serde_json::from_str(&check_line("{not json").unwrap_err()).unwrap();
        assert_eq!(e["error"]["code"], -32700);
        assert_eq!(e["id"], serde_json::Value::Null);
        let e: serde_json::Value =
            serde_json::from_str(&check_line(r#"{"jsonrpc":"2.0","id":7,"nope":1}"#).unwrap_err()).unwrap();
        assert_eq!(e["error"]["code"], -32600);
        assert_eq!(e["id"], 7);
        assert!(check_line(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).is_ok());
        assert!(check_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_ok());
    }

    async fn lines_of(input: &[u8], max: usize) -> Vec<StdinLine> {
        let mut reader = tokio::io::BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        while let Some(l) = next_line(&mut reader, max).await.unwrap() {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn stdin_lines_are_raw_bytes_and_bounded() {
        let lines = lines_of(b"ok\n\xff\xfe\n0123456789\nlast", 8).await;
        assert_eq!(
            lines,
            vec![
                StdinLine::Bytes(b"ok".to_vec()),
                StdinLine::Bytes(b"\xff\xfe".to_vec()),
                StdinLine::TooLong,
                StdinLine::Bytes(b"last".to_vec()),
            ]
        );
        assert_eq!(lines_of(b"0123456789", 8).await, vec![StdinLine::TooLong]);
        assert!(lines_of(b"", 8).await.is_empty());
    }
}
