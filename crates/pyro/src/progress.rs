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

tokio::task_local! {
    static SCOPED: Progress;
}

/// Run `fut` with `progress` as the sink for every [`crate::Pyro`] call made inside it, in
/// place of the engine-wide sink of [`crate::Pyro::set_progress`]. Scoped to this one task
/// (a task-local), so concurrent calls (an MCP server serving several clients) each report to
/// their own caller.
pub async fn scoped<F: std::future::Future>(progress: Progress, fut: F) -> F::Output {
    SCOPED.scope(progress, fut).await
}

/// The sink installed by [`scoped`] for the current task, if any.
pub(crate) fn current_scoped() -> Option<Progress> {
    SCOPED.try_with(Progress::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn scoped_sink_applies_inside_the_scope_only() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink = Progress::new(move |e| s.lock().unwrap().push(e.stage.clone()));
        assert!(current_scoped().is_none());
        scoped(sink, async {
            current_scoped().expect("scoped sink").report("inside", "m", None);
        })
        .await;
        assert!(current_scoped().is_none());
        assert_eq!(*seen.lock().unwrap(), vec!["inside".to_string()]);
    }
}
