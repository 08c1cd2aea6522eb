//! The states and modes the payloads report, as types. Each serialises to exactly the string
//! the JSON contract has always carried (`started`, `guest_vsock`, ...), so records written
//! by earlier versions load unchanged and the payload keys and values stay as they are.

use serde::{Deserialize, Serialize};

pub use pyro_protocol::session::ServiceStatus;

/// Where a workspace is in its life (`state` of a workspace payload and record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceState {
    /// `create_workspace` recorded the workspace and is still booting and seeding it (the
    /// record names the creating process). If that call dies, the next list, status or
    /// create removes the workspace.
    Creating,
    /// The VM runs.
    Started,
    /// No VM runs; the disk is kept and `start_workspace` boots it again.
    Stopped,
    /// No VM runs, but the guest's memory and device state are saved on the host
    /// (`pause_workspace`, or the idle pause): `resume_workspace`, or any call that needs
    /// the guest, brings it back with its processes as they were.
    Paused,
}

impl WorkspaceState {
    /// Every state.
    pub const ALL: [WorkspaceState; 4] =
        [WorkspaceState::Creating, WorkspaceState::Started, WorkspaceState::Stopped, WorkspaceState::Paused];

    /// The contract name: `creating`, `started`, `stopped` or `paused`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceState::Creating => "creating",
            WorkspaceState::Started => "started",
            WorkspaceState::Stopped => "stopped",
            WorkspaceState::Paused => "paused",
        }
    }
}

impl std::fmt::Display for WorkspaceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How commands reach the guest (`execution_mode` of the payloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    /// Not booted yet: a VM created but not started, a workspace still being created.
    Pending,
    /// Commands run in the guest through pyro's agent.
    ///
    /// The name is the reference implementation's and is kept for compatibility: pyro's
    /// agent channel is a virtio-serial port (QEMU `virtserialport`), not a vsock socket.
    /// Clients should read it as "runs in the guest through the agent", whatever the
    /// transport.
    GuestVsock,
    /// Commands run directly on the host with no isolation (`allow_host_compat`, only when
    /// no VM backend can boot; never for workspaces).
    HostCompat,
}

impl ExecutionMode {
    /// Every mode.
    pub const ALL: [ExecutionMode; 3] = [ExecutionMode::Pending, ExecutionMode::GuestVsock, ExecutionMode::HostCompat];

    /// The contract name: `pending`, `guest_vsock` or `host_compat`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionMode::Pending => "pending",
            ExecutionMode::GuestVsock => "guest_vsock",
            ExecutionMode::HostCompat => "host_compat",
        }
    }
}

impl std::fmt::Display for ExecutionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON Schema of a state: `{"type": "string", "enum": [...]}`, inlined where it is
/// used, so a payload's schema is the plain string it always was plus the list of values.
#[cfg(feature = "schema")]
macro_rules! string_enum_schema {
    ($t:ty) => {
        impl schemars::JsonSchema for $t {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($t).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let names: Vec<&str> = <$t>::ALL.iter().map(|v| v.as_str()).collect();
                schemars::json_schema!({ "type": "string", "enum": names })
            }
        }
    };
}
#[cfg(feature = "schema")]
string_enum_schema!(WorkspaceState);
#[cfg(feature = "schema")]
string_enum_schema!(ExecutionMode);

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract strings, both ways: what older records hold still loads.
    #[test]
    fn states_and_modes_keep_their_contract_names() {
        for s in WorkspaceState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(serde_json::from_value::<WorkspaceState>(s.as_str().into()).unwrap(), s);
        }
        for m in ExecutionMode::ALL {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
            assert_eq!(serde_json::from_value::<ExecutionMode>(m.as_str().into()).unwrap(), m);
        }
        for s in ServiceStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(serde_json::from_value::<ServiceStatus>(s.as_str().into()).unwrap(), s);
        }
        assert!(serde_json::from_value::<WorkspaceState>("running".into()).is_err());
    }
}
