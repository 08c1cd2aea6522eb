//! A VM's network policy and the fixed addressing of QEMU user-mode networking.

use serde::{Deserialize, Serialize};

/// What a VM may do on the network. Serialised as today's strings (`off`, `egress`,
/// `egress+published-ports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum NetworkPolicy {
    /// No network interface at all.
    #[serde(rename = "off")]
    Off,
    /// Outbound access to the internet (never to this host or private ranges unless
    /// `PYRO_NETWORK_ALLOW_PRIVATE=1`), through the egress filter.
    #[serde(rename = "egress")]
    Egress,
    /// [`NetworkPolicy::Egress`], and services may publish ports on host loopback.
    #[serde(rename = "egress+published-ports")]
    EgressPublishedPorts,
}

impl NetworkPolicy {
    /// The policy's string (`off`, `egress`, `egress+published-ports`).
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkPolicy::Off => "off",
            NetworkPolicy::Egress => "egress",
            NetworkPolicy::EgressPublishedPorts => "egress+published-ports",
        }
    }

    /// Parse a policy (trimmed, case-insensitive); `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" => Some(NetworkPolicy::Off),
            "egress" => Some(NetworkPolicy::Egress),
            "egress+published-ports" => Some(NetworkPolicy::EgressPublishedPorts),
            _ => None,
        }
    }

    /// Does the guest get a network interface?
    pub fn has_nic(self) -> bool {
        self != NetworkPolicy::Off
    }

    /// May services publish ports on the host?
    pub fn allows_published_ports(self) -> bool {
        self == NetworkPolicy::EgressPublishedPorts
    }
}

impl std::fmt::Display for NetworkPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The guest's address on QEMU's user network (10.0.2.0/24).
pub const USER_NET_GUEST_IP: &str = "10.0.2.15";
/// The user network's gateway (the host, as seen from the guest).
pub const USER_NET_GATEWAY: &str = "10.0.2.2";
/// The user network's DNS forwarder.
pub const USER_NET_DNS: &str = "10.0.2.3";
/// The user network's subnet.
pub const USER_NET_SUBNET: &str = "10.0.2.0/24";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_serialise_as_the_strings_records_hold() {
        for p in [NetworkPolicy::Off, NetworkPolicy::Egress, NetworkPolicy::EgressPublishedPorts] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(serde_json::from_value::<NetworkPolicy>(p.as_str().into()).unwrap(), p);
            assert_eq!(NetworkPolicy::parse(&format!(" {} ", p.as_str().to_uppercase())), Some(p));
        }
        assert_eq!(NetworkPolicy::parse("on"), None);
    }
}
