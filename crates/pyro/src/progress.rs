//! Progress events for long work (environment build, pull, boot, export). The CLI renders
//! them on a terminal, the MCP server turns them into progress notifications, `--json` drops them.

use std::sync::Arc;

/// One step of long-running work, passed to a [`Progress`] sink.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressEvent {
    /// Short machine-friendly stage name, e.g. `debootstrap`, `kernel`, `rootfs-image`.
    pub stage: String,
    /// Human sentence describing the step.
    pub message: String,
    /// Overall completion in 0.0..=1.0 when known.
    pub fraction: Option<f64>,
}

type Sink = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// A sink for progress events. Cheap to clone.
#[derive(Clone, Default)]
pub struct Progress(Option<Sink>);

impl Progress {
    /// A sink that calls `f` for every event, from whichever thread does the work.
    pub fn new(f: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Self {
        Progress(Some(Arc::new(f)))
    }

    /// A sink that drops everything.
    pub fn silent() -> Self {
        Progress(None)
    }

    /// Send an event to the sink (nothing happens for a silent one).
    pub fn report(&self, stage: &str, message: impl Into<String>, fraction: Option<f64>) {
        if let Some(f) = &self.0 {
            f(&ProgressEvent { stage: stage.to_string(), message: message.into(), fraction });
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Progress(sink)" } else { "Progress(silent)" })
    }
}
