//! The one tokio runtime of the process and the way every call waits on it: GIL released,
//! Ctrl-C polled.

use pyo3::prelude::*;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

/// How often a waiting call looks for a pending signal (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// The process-wide multi-thread runtime every call runs on (created on first use).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("pyro-sdk")
            .build()
            .expect("cannot start the tokio runtime of pyro_sdk")
    })
}

/// Run `fut` to completion with the GIL released. Every [`SIGNAL_POLL`] the thread takes the
/// GIL for a moment to run Python's pending signal handlers: when one raises (Ctrl-C raises
/// `KeyboardInterrupt`), `fut` is dropped, which cancels its work as dropping a Rust SDK
/// future does (a cancelled exec kills its command in the guest), and that exception is
/// returned. Signal handlers run only on the main thread; other threads just wait.
pub(crate) fn wait<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    py.detach(|| {
        runtime().block_on(async {
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    biased;
                    out = &mut fut => return Ok(out),
                    () = tokio::time::sleep(SIGNAL_POLL) => Python::attach(|py| py.check_signals())?,
                }
            }
        })
    })
}
