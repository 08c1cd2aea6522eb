//! Long tool calls as tasks (the 2026-07-28 `io.modelcontextprotocol/tasks` extension).
//!
//! A client that declares the extension gets a task handle at once for the tools in
//! [`TASK_TOOLS`]; the SDK future runs in the server's [`TaskManager`], `tasks/get` reports
//! progress in the status message and the tool result when done, and `tasks/cancel` drops
//! the future (which stops the guest command, as `notifications/cancelled` does for a plain
//! call). A client that does not declare the extension is served exactly as before.

use crate::PyroMcp;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{CallToolRequestParams, CallToolResponse, CreateTaskResult};
use rmcp::service::RequestContext;
use rmcp::task_manager::{TaskExit, TaskManager, TaskOptions};
use rmcp::RoleServer;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Tools served as tasks to clients that declare the tasks extension: the ones that can run
/// for minutes (a command, a service waiting for readiness, a disk export).
pub const TASK_TOOLS: &[&str] = &["service_start", "vm_exec", "vm_run", "workspace_disk_export", "workspace_exec"];

/// How long a task is kept beyond the call's own `timeout_seconds`: running tasks older than
/// their TTL are failed by the task manager, finished ones are dropped one TTL after they end.
const TASK_TTL_MARGIN_SECONDS: u64 = 3_600;

/// The poll interval suggested to clients.
const TASK_POLL_INTERVAL_MS: u64 = 500;

/// The server's tasks, shared by every clone of the server (HTTP requests of a 2026-07-28
/// client are served statelessly, each by its own clone).
#[derive(Clone, Default)]
pub(crate) struct Tasks {
    pub(crate) manager: TaskManager,
    /// Cancelled when the server ends, ending every running task's call.
    stop: CancellationToken,
    /// One clone per running task's future: the server waits for them to be dropped.
    live: Arc<()>,
}

impl Tasks {
    /// End every running task's call (dropping its SDK future, which stops its guest command)
    /// and wait for them to be dropped, as an ended connection does for plain calls.
    pub(crate) async fn end(&self) {
        self.stop.cancel();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.live) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.manager.shutdown();
    }
}

/// Whether this call is answered with a task handle: the client declared the extension (at
/// `initialize`, or in the request's `_meta`), the tool is long-running, and it is not a
/// `background` exec (which already answers at once).
pub(crate) fn wants_task(request: &CallToolRequestParams, context: &RequestContext<RoleServer>) -> bool {
    let background = request.arguments.as_ref().and_then(|a| a.get("background")).and_then(|b| b.as_bool());
    TASK_TOOLS.contains(&request.name.as_ref())
        && background != Some(true)
        && context.client_capabilities().is_some_and(|c| c.supports_tasks())
}

impl PyroMcp {
    /// Start the call as a task and answer with its handle.
    pub(crate) fn start_task(
        &self,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> CallToolResponse {
        let tool = request.name.to_string();
        let timeout = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("timeout_seconds"))
            .and_then(|t| t.as_u64())
            .unwrap_or(0)
            .min(pyro::limits::MAX_EXEC_TIMEOUT_SECONDS);
        // rmcp cancels the request's token as soon as the task handle is answered, so the task
        // gets its own, cancelled by `tasks/cancel` or the server ending.
        context.ct = self.tasks.stop.child_token();
        let live = self.tasks.live.clone();
        // Progress goes to the task's status message: `notifications/progress` for a request
        // that has already been answered would be a protocol error.
        context.meta.remove("progressToken");
        let server = self.clone();
        let options = TaskOptions::new()
            .with_ttl_ms((timeout + TASK_TTL_MARGIN_SECONDS) * 1000)
            .with_poll_interval_ms(TASK_POLL_INTERVAL_MS)
            .with_status_message(format!("{tool}: started"));
        let task = self.tasks.manager.spawn(options, move |task| {
            Box::pin(async move {
                let _live = live;
                let last = Arc::new(Mutex::new(String::new()));
                let sink = {
                    let last = last.clone();
                    pyro::Progress::new(move |e| {
                        if let Ok(mut l) = last.lock() {
                            *l = format!("{}: {}", e.stage, e.message);
                        }
                    })
                };
                let ct = context.ct.clone();
                let call = server.router.call(ToolCallContext::new(&server, request, context));
                let work = pyro::progress::scoped(sink, call);
                tokio::pin!(work);
                let started = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        r = &mut work => return match r {
                            Ok(CallToolResponse::Complete(result)) => Ok(result),
                            Ok(_) => Err(TaskExit::Error(rmcp::ErrorData::internal_error(
                                format!("{tool} did not produce a tool result"), None))),
                            Err(e) => Err(TaskExit::Error(e)),
                        },
                        _ = task.cancelled() => {
                            // Dropping `work` (on return) drops the SDK future, which stops
                            // the guest command.
                            ct.cancel();
                            return Err(TaskExit::Cancelled);
                        }
                        _ = tick.tick() => {
                            let last = last.lock().map(|l| l.clone()).unwrap_or_default();
                            let mut message = format!("{tool}: running for {} s", started.elapsed().as_secs());
                            if !last.is_empty() {
                                message = format!("{message} ({last})");
                            }
                            task.set_status_message(message);
                        }
                    }
                }
            })
        });
        CreateTaskResult::new(task).into()
    }
}
