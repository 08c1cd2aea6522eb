//! Progress of long calls (environment builds and pulls, template preparation) for Python
//! callers: the CLI's `[pyro] stage: message (42%)` lines on `sys.stderr`, or each event
//! as a dict to a callable.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The engine's progress sink for `Pyro(progress=...)`: `None` prints lines when
/// `sys.stderr` is a terminal, `True`/`False` always/never, a callable gets
/// `{"stage", "message", "fraction"}` for each event (from an engine thread, with the GIL).
pub(crate) fn sink(py: Python<'_>, progress: Option<&Bound<'_, PyAny>>) -> PyResult<pyro::Progress> {
    let print = match progress {
        None => stderr_is_terminal(py),
        Some(p) if p.is_none() => stderr_is_terminal(py),
        Some(p) if p.is_instance_of::<pyo3::types::PyBool>() => p.extract::<bool>()?,
        Some(p) if p.is_callable() => return Ok(callback(p.clone().unbind())),
        Some(p) => {
            return Err(PyTypeError::new_err(format!(
                "progress must be None, True, False or a callable taking one dict, not {}",
                p.get_type().name()?
            )))
        }
    };
    Ok(if print { pyro::Progress::new(|ev| write_line(&line(ev))) } else { pyro::Progress::silent() })
}

fn stderr_is_terminal(py: Python<'_>) -> bool {
    (|| -> PyResult<bool> { py.import("sys")?.getattr("stderr")?.call_method0("isatty")?.extract() })().unwrap_or(false)
}

/// The CLI's progress line format.
fn line(ev: &pyro::ProgressEvent) -> String {
    match ev.fraction {
        Some(f) => format!("[pyro] {}: {} ({:.0}%)\n", ev.stage, ev.message, f * 100.0),
        None => format!("[pyro] {}: {}\n", ev.stage, ev.message),
    }
}

/// Write to Python's `sys.stderr` (not fd 2), so redirections made in Python apply.
fn write_line(text: &str) {
    Python::attach(|py| {
        let stderr = match py.import("sys").and_then(|sys| sys.getattr("stderr")) {
            Ok(s) if !s.is_none() => s,
            _ => return,
        };
        let _ = stderr.call_method1("write", (text,));
        let _ = stderr.call_method0("flush");
    });
}

fn callback(cb: Py<PyAny>) -> pyro::Progress {
    pyro::Progress::new(move |ev| {
        Python::attach(|py| {
            let event = PyDict::new(py);
            let filled = (|| -> PyResult<()> {
                event.set_item("stage", &ev.stage)?;
                event.set_item("message", &ev.message)?;
                event.set_item("fraction", ev.fraction)?;
                Ok(())
            })();
            // A failing callback must not fail the engine's work: report it the way Python
            // reports errors nobody can catch (sys.unraisablehook) and go on.
            if let Err(e) = filled.and_then(|()| cb.call1(py, (event,)).map(drop)) {
                e.write_unraisable(py, Some(cb.bind(py)));
            }
        });
    })
}
