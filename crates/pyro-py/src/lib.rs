//! The pyro Python SDK: the extension module `pyro_sdk._native`. A thin adapter over the
//! `pyro` SDK, like the CLI and the MCP server: it converts arguments and payloads and
//! holds no engine logic.
//!
//! - `sdk.rs`: the `Pyro` class, one method per SDK call (the reference SDK's methods plus pyro's own).
//! - `mcp.rs`: `McpServer` (`Pyro.create_server`), served on stdio by `pyro_mcp`.
//! - `convert.rs`: arguments in and payloads out through serde (`pythonize`).
//! - `runtime.rs`: the process-wide tokio runtime; calls release the GIL and poll Ctrl-C.
//! - `errors.rs`: engine errors as `pyro_sdk.errors` classes, one per stable code.
//! - `progress.rs`: progress of long calls on `sys.stderr` or to a callable.
//! - `bundle.rs`: the runtime binaries a wheel embeds, written out once.

mod bench;
mod bundle;
mod convert;
mod errors;
mod mcp;
mod progress;
mod runtime;
mod schema;
mod sdk;

use pyo3::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Write the embedded runtime binaries (a wheel build) under `cache_dir` and register them
/// with the engine, once per process: the first successful call wins (a failed one, e.g. an
/// unwritable cache directory, is retried by the next `Pyro()`). Returns their directory
/// (`None` in a development build, where the engine finds the binaries as the CLI does).
pub(crate) fn install_bundle(cache_dir: &Path) -> pyro::Result<Option<PathBuf>> {
    static INSTALLED: Mutex<Option<Option<PathBuf>>> = Mutex::new(None);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = installed.as_ref() {
        return Ok(dir.clone());
    }
    let dir = bundle::install(cache_dir)?;
    *installed = Some(dir.clone());
    Ok(dir)
}

/// Where the embedded runtime binaries were written (`None` in a development build).
#[pyfunction]
fn _runtime_dir(py: Python<'_>) -> PyResult<Option<String>> {
    let paths = pyro::Paths::from_env().map_err(|e| errors::to_pyerr(py, &e))?;
    let dir = install_bundle(&paths.cache_dir).map_err(|e| errors::to_pyerr(py, &e))?;
    Ok(dir.map(|d| d.display().to_string()))
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(_runtime_dir, m)?)?;
    m.add_class::<sdk::PyPyro>()?;
    m.add_class::<mcp::McpServer>()?;
    schema::register(m)?;
    bench::register(m)?;
    Ok(())
}
