//! `_native._bench_status_workspace`: the Rust SDK side of the binding-overhead benchmark
//! (`bench/status_overhead.py`): the same engine and runtime as `Pyro.status_workspace`,
//! without Python in the loop.

use crate::errors::to_pyerr;
use crate::sdk::PyPyro;
use pyo3::prelude::*;
use std::time::Instant;

/// Await the Rust SDK's `status_workspace(workspace_id)` `n` times inside one `block_on` on
/// the binding's runtime (GIL released) and return the mean nanoseconds per call.
#[pyfunction]
fn _bench_status_workspace(py: Python<'_>, pyro: &Bound<'_, PyPyro>, workspace_id: &str, n: u32) -> PyResult<f64> {
    if n == 0 {
        return Err(pyo3::exceptions::PyValueError::new_err("n must be at least 1"));
    }
    let engine = pyro.get().engine().clone();
    let result = py.detach(|| {
        crate::runtime::runtime().block_on(async {
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box(engine.status_workspace(workspace_id).await?);
            }
            Ok::<_, pyro::Error>(start.elapsed().as_nanos() as f64 / f64::from(n))
        })
    });
    result.map_err(|e| to_pyerr(py, &e))
}

/// Adds `_bench_status_workspace` to the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_bench_status_workspace, m)?)
}
