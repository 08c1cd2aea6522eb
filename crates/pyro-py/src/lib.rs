//! The pyro Python SDK: the extension module `pyro_sdk._native`. A thin adapter over the
//! `pyro` SDK, like the CLI and the MCP server: it converts arguments and payloads and
//! holds no engine logic.

mod bench;
mod bundle;
mod schema;

use pyo3::prelude::*;

/// Where the embedded runtime binaries were written (`None` in a development build).
#[pyfunction]
fn _runtime_dir() -> PyResult<Option<String>> {
    let paths = pyro::Paths::from_env().map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    let dir = bundle::install(&paths.cache_dir).map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
    Ok(dir.map(|d| d.display().to_string()))
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(_runtime_dir, m)?)?;
    schema::register(m)?;
    bench::register(m)?;
    Ok(())
}
