//! Engine errors as the exception classes of `pyro_sdk.errors`, one per stable code.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

/// `pyro_sdk.errors._BY_CODE` (code -> class) and `PyroError`, imported on the first error.
static CLASSES: PyOnceLock<(Py<PyDict>, Py<PyType>)> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&(Py<PyDict>, Py<PyType>)> {
    CLASSES.get_or_try_init(py, || {
        let module = py.import("pyro_sdk.errors")?;
        let by_code = module.getattr("_BY_CODE")?.cast_into::<PyDict>()?.unbind();
        let base = module.getattr("PyroError")?.cast_into::<PyType>()?.unbind();
        Ok((by_code, base))
    })
}

/// The exception for an engine error: the class of its code (`PyroError` for a code this
/// package does not know), carrying `.code` and the engine's message.
pub(crate) fn to_pyerr(py: Python<'_>, e: &pyro::Error) -> PyErr {
    let (code, message) = (e.code(), e.to_string());
    let build = || -> PyResult<PyErr> {
        let (by_code, base) = classes(py)?;
        let class = match by_code.bind(py).get_item(code)? {
            Some(class) => class,
            None => base.bind(py).clone().into_any(),
        };
        Ok(PyErr::from_value(class.call1((message.clone(), code))?))
    };
    build().unwrap_or_else(|err| err)
}

/// An `invalid_input` error the binding raises itself (an argument Python can hold but the
/// engine's types cannot, e.g. a negative count).
pub(crate) fn invalid_input(py: Python<'_>, message: String) -> PyErr {
    to_pyerr(py, &pyro::Error::InvalidInput(message))
}
