//! `McpServer`: pyro's MCP server (the `pyro_mcp` crate) over a `Pyro`, served on stdio.

use crate::errors::to_pyerr;
use crate::runtime;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The only transport `run` serves.
const STDIO: &str = "stdio";

/// An MCP server over a Pyro engine (Pyro.create_server). run() serves it on stdin/stdout.
#[pyclass(name = "McpServer", module = "pyro_sdk", frozen)]
pub(crate) struct McpServer {
    server: pyro_mcp::PyroMcp,
}

impl McpServer {
    /// A server listing the tools of `profile` (`Profile::parse`'s message for an unknown
    /// one), with the operator's idle pause default from the environment as `pyro mcp serve`.
    pub(crate) fn new(pyro: pyro::Pyro, profile: &str) -> PyResult<Self> {
        let profile = pyro_mcp::Profile::parse(profile).map_err(PyValueError::new_err)?;
        let idle_pause = pyro_mcp::idle_pause_default_from_env().map_err(PyValueError::new_err)?;
        let server = pyro_mcp::PyroMcp::new(pyro, profile)
            .with_idle_pause_default(idle_pause)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(McpServer { server })
    }
}

#[pymethods]
impl McpServer {
    /// Serve MCP (newline-delimited JSON-RPC) on stdin/stdout until the client closes stdin;
    /// blocks, with the GIL released. Ctrl-C (KeyboardInterrupt) stops it. Ephemeral VMs the
    /// server made are deleted on the way out. transport: "stdio" (the only one).
    #[pyo3(signature = (transport=STDIO.to_string()), text_signature = "($self, transport='stdio')")]
    fn run(&self, py: Python<'_>, transport: String) -> PyResult<()> {
        if transport != STDIO {
            return Err(PyValueError::new_err(format!("unsupported transport '{transport}'; expected 'stdio'")));
        }
        match runtime::wait(py, pyro_mcp::serve_stdio(self.server.clone())) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(to_pyerr(py, &pyro::Error::Io(format!("MCP server: {e}")))),
            Err(interrupted) => {
                // serve_stdio deletes its VMs when stdin closes; an interrupted one does it here.
                let pyro = self.server.pyro().clone();
                py.detach(|| runtime::runtime().block_on(pyro.delete_all_vms("server_shutdown")));
                Err(interrupted)
            }
        }
    }

    /// The profile: "vm-run", "workspace-core" or "workspace-full".
    #[getter]
    fn profile(&self) -> &'static str {
        self.server.profile().as_str()
    }

    /// The names of the tools this server lists, sorted.
    #[getter]
    fn tool_names(&self) -> Vec<&'static str> {
        self.server.profile().tool_names()
    }

    fn __repr__(&self) -> String {
        format!("McpServer(profile={:?})", self.server.profile().as_str())
    }
}
