//! Placeholder (the `stubs` branch provides `_bench_status_workspace`).
use pyo3::prelude::*;
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
