//! MCP overhead benchmark (`cargo bench -p pyro-mcp --bench mcp_roundtrip`).
//!
//! One started debian:12 workspace; `workspace_status` measured two ways in one run:
//! - the SDK call in-process (`Pyro::status_workspace`);
//! - the same call as an MCP `tools/call` round trip: an rmcp client and the pyro MCP server
//!   (profile workspace-full) talking newline-delimited JSON-RPC over an in-process duplex
//!   pipe (the stdio transport's framing, without the process boundary).
//!
//! Prints medians, p95 and the added latency. Target: <= 2 ms added, printed as
//! `RATIO <name> <value> <= 2` lines for `scripts/bench.sh --check`.
//! Needs: scripts/build.sh release (or PYRO_SUPERVISOR_BIN / PYRO_AGENT_BIN), debian:12 installed.

use pyro::workspace::CreateWorkspaceOptions;
use pyro::{Paths, Pyro};
use pyro_mcp::{Profile, PyroMcp};
use rmcp::model::CallToolRequestParams;
use rmcp::ServiceExt;
use std::time::Instant;

const N: usize = 300;

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() * 95 / 100])
}

/// `N` `workspace_status` tool calls, each checked, in milliseconds.
async fn time_status(client: &rmcp::service::RunningService<rmcp::RoleClient, ()>, id: &str) -> Vec<f64> {
    let args = serde_json::json!({ "workspace_id": id }).as_object().unwrap().clone();
    let mut times = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let r = client
            .call_tool(CallToolRequestParams::new("workspace_status").with_arguments(args.clone()))
            .await
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_ne!(r.is_error, Some(true));
        assert_eq!(r.structured_content.as_ref().unwrap()["state"], "started");
    }
    times
}

fn main() {
    let work = tempfile::Builder::new().prefix("pyro-mcpbench-").tempdir_in("/tmp").unwrap();
    let mut paths = Paths::from_env().unwrap();
    paths.home = work.path().join("home");
    let pyro = Pyro::with_paths(paths);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ws = pyro.create_workspace(CreateWorkspaceOptions::new("debian:12")).await.expect("workspace boots");
        let id = ws.workspace_id.clone();

        let mut sdk = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            let s = pyro.status_workspace(&id).await.unwrap();
            sdk.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(s.state, pyro::WorkspaceState::Started);
        }

        let (server_io, client_io) = tokio::io::duplex(1 << 20);
        let server = PyroMcp::new(pyro.clone(), Profile::WorkspaceFull);
        let server_task = tokio::spawn(async move {
            let running = server.serve(server_io).await.expect("server starts");
            let _ = running.waiting().await;
        });
        let client = ().serve(client_io).await.expect("client initializes");
        let mcp = time_status(&client, &id).await;
        let _ = client.cancel().await;
        let _ = server_task.await;

        // The same through a real `pyro mcp serve` child over stdio (process boundary, pipes).
        let pyro_bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("pyro");
        let stdio = if pyro_bin.exists() {
            let mut cmd = tokio::process::Command::new(&pyro_bin);
            cmd.args(["mcp", "serve", "--profile", "workspace-full"]).env("PYRO_HOME", pyro.paths().home.clone());
            let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("pyro mcp serve starts");
            let client = ().serve(transport).await.expect("client initializes");
            let times = time_status(&client, &id).await;
            let _ = client.cancel().await;
            Some(times)
        } else {
            println!("  (no {} next to the bench: build it with scripts/build.sh release)", pyro_bin.display());
            None
        };
        pyro.delete_workspace(&id).await.unwrap();

        let (sdk_med, sdk_p95) = stats(sdk);
        let (mcp_med, mcp_p95) = stats(mcp);
        println!("workspace_status, {N} calls each");
        println!("  SDK in-process:        median {sdk_med:.3} ms, p95 {sdk_p95:.3} ms");
        println!("  MCP tools/call round trip (in-process duplex, JSON-RPC lines): median {mcp_med:.3} ms, p95 {mcp_p95:.3} ms");
        println!(
            "  added by MCP: {:.3} ms median (target <= 2 ms), ratio MCP/SDK {:.2}x",
            mcp_med - sdk_med,
            mcp_med / sdk_med
        );
        println!("RATIO mcp_added_ms {:.3} <= 2", mcp_med - sdk_med);
        if let Some(times) = stdio {
            let (med, p95) = stats(times);
            println!("  MCP over stdio to a `pyro mcp serve` child: median {med:.3} ms, p95 {p95:.3} ms");
            println!("  added by MCP over stdio: {:.3} ms median (target <= 2 ms)", med - sdk_med);
            println!("RATIO mcp_stdio_added_ms {:.3} <= 2", med - sdk_med);
        }
    });
}
