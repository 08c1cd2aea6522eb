//! `_native._bench_status_workspace`: the Rust SDK side of the binding-overhead benchmark
//! (`bench/status_overhead.py`). Placeholder until the `Pyro` class exists.

use pyo3::prelude::*;

/// Adds `_bench_status_workspace` to the extension module.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
