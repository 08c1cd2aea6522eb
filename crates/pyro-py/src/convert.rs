//! Arguments in, payloads out: the only conversions the binding does.
//!
//! Payloads go out through serde (`pythonize`): the Python dict has exactly the keys and
//! values the Rust SDK's payload struct serializes to (the CLI's `--json` and the MCP
//! `structuredContent` are the same serialization). Structured arguments (secrets, labels,
//! readiness, published ports, ...) come in through serde too (`depythonize`) into the SDK's
//! own option types; a bad one raises `TypeError` (wrong Python type) or `ValueError` (right
//! type, wrong content) naming the parameter and what it takes.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyMapping, PyTuple};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A payload as plain Python data (dicts, lists, str, int, float, bool, None).
pub(crate) fn to_py<T: Serialize>(py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
    Ok(pythonize::pythonize(py, value)?.unbind())
}

/// The Python container a structured argument must be.
#[derive(Clone, Copy)]
pub(crate) enum Shape {
    /// A `dict` (any mapping).
    Dict,
    /// A `list` or `tuple` (not a `str`, which is a sequence too).
    List,
}

/// An optional structured argument as the SDK type `T`. `None` (Python's) is `None`.
/// `name` is the parameter, `expected` says what it takes, e.g.
/// `a list of {"name", "value"} or {"name", "file_path"} dicts`.
pub(crate) fn from_py<T: DeserializeOwned>(
    value: Option<&Bound<'_, PyAny>>,
    shape: Shape,
    name: &str,
    expected: &str,
) -> PyResult<Option<T>> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok(None) };
    let fits = match shape {
        Shape::Dict => value.cast::<PyMapping>().is_ok(),
        Shape::List => value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>(),
    };
    if !fits {
        let type_name = value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
        return Err(PyTypeError::new_err(format!("{name} must be {expected}, not {type_name}")));
    }
    pythonize::depythonize::<T>(value).map(Some).map_err(|e| {
        let py = value.py();
        let text = e.to_string();
        let err = PyErr::from(e);
        // Python-side type mismatches (and serde's "invalid type") are TypeErrors; content
        // that does not fit (missing keys, unknown variants, out-of-range ints) is a ValueError.
        if err.is_instance_of::<PyTypeError>(py) || text.starts_with("invalid type") {
            PyTypeError::new_err(format!("{name} must be {expected}: {text}"))
        } else {
            PyValueError::new_err(format!("{name} must be {expected}: {text}"))
        }
    })
}

/// An integer argument as the engine's unsigned type. Values the type cannot hold (negative,
/// or beyond its maximum) raise `InvalidInputError` naming the parameter; the engine checks
/// the actual range of what it can hold, with its own message.
pub(crate) fn unsigned<T>(py: Python<'_>, value: i64, name: &str) -> PyResult<T>
where
    T: TryFrom<i64> + Bounded + std::fmt::Display,
{
    if value < 0 {
        return Err(crate::errors::invalid_input(py, format!("{name} must not be negative, got {value}")));
    }
    T::try_from(value)
        .map_err(|_| crate::errors::invalid_input(py, format!("{name} must be at most {}, got {value}", T::MAX)))
}

/// [`unsigned`] for an optional argument.
pub(crate) fn unsigned_opt<T>(py: Python<'_>, value: Option<i64>, name: &str) -> PyResult<Option<T>>
where
    T: TryFrom<i64> + Bounded + std::fmt::Display,
{
    value.map(|v| unsigned(py, v, name)).transpose()
}

/// Unsigned integer types with a largest value.
pub(crate) trait Bounded {
    /// The largest value.
    const MAX: Self;
}

impl Bounded for u16 {
    const MAX: Self = u16::MAX;
}
impl Bounded for u32 {
    const MAX: Self = u32::MAX;
}
impl Bounded for u64 {
    const MAX: Self = u64::MAX;
}
