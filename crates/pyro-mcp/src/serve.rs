//! Transports: stdio (newline-delimited JSON-RPC) and Streamable HTTP.

use crate::{Profile, PyroMcp};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Serve MCP on stdin/stdout until the client closes stdin. Ephemeral VMs this server made
/// are deleted on the way out.
///
/// Lines that are not JSON-RPC get a JSON-RPC error response (`-32700` parse error,
/// `-32600` invalid request) and the server keeps serving; every other line goes to rmcp.
pub async fn serve_stdio(pyro: pyro::Pyro, profile: Profile) -> std::io::Result<()> {
    let (to_rmcp, rmcp_in) = tokio::io::duplex(1 << 20);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(1 << 20);
    let (err_tx, mut err_rx) = tokio::sync::mpsc::unbounded_channel::<String>();

    // stdin -> rmcp, answering bad lines ourselves.
    let reader = tokio::spawn(async move {
        let mut to_rmcp = to_rmcp;
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim().is_empty() {
                continue;
            }
            match check_line(&line) {
                Ok(()) => {
                    if to_rmcp.write_all(line.as_bytes()).await.is_err() || to_rmcp.write_all(b"\n").await.is_err() {
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
    let server = PyroMcp::new(pyro.clone(), profile);
    let result = match server.serve((rmcp_in, rmcp_out)).await {
        Ok(running) => running.waiting().await.map(|_| ()).map_err(std::io::Error::other),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    };
    reader.abort();
    let _ = writer.await;
    pyro.delete_all_vms("server_shutdown").await;
    result
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
    pub addr: SocketAddr,
    /// Required (as `Authorization: Bearer TOKEN`) when set; must be set for a non-loopback bind.
    pub token: Option<String>,
}

/// Serve MCP over Streamable HTTP at `/mcp` until Ctrl-C / SIGTERM.
///
/// A non-loopback address is refused unless a bearer token is set. Browser `Origin`s other
/// than localhost / 127.0.0.1 / [::1] are rejected (DNS-rebinding and cross-site protection),
/// and so are `Host` headers other than loopback names or the bound address.
pub async fn serve_http(
    pyro: pyro::Pyro,
    profile: Profile,
    opts: HttpOptions,
    ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    // Workspaces left half-created by an earlier, killed server are reaped before serving.
    pyro.sweep_orphans().await;
    let loopback = opts.addr.ip().is_loopback();
    if !loopback && opts.token.is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("refusing to serve MCP on non-loopback address {} without --token", opts.addr),
        ));
    }
    let listener = tokio::net::TcpListener::bind(opts.addr).await?;
    let local = listener.local_addr()?;
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if !loopback {
        hosts.push(local.ip().to_string());
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
    let engine = pyro.clone();
    let service = StreamableHttpService::new(
        move || Ok(PyroMcp::new(engine.clone(), profile)),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let token = opts.token.map(Arc::new);
    let app = axum::Router::new().nest_service("/mcp", service).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                if let Some(t) = token.as_deref() {
                    let ok = req
                        .headers()
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .is_some_and(|given| constant_time_eq(given.as_bytes(), t.as_bytes()));
                    if !ok {
                        return axum::response::IntoResponse::into_response((
                            axum::http::StatusCode::UNAUTHORIZED,
                            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                            "missing or wrong bearer token\n",
                        ));
                    }
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
    pyro.delete_all_vms("server_shutdown").await;
    result
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
