//! Typed views of the SDK payloads that are `serde_json::Value`, so their tools have a real
//! `outputSchema`. Each view keeps every key of the SDK payload (named fields plus a flattened
//! rest), so `structuredContent` is exactly what the SDK returned.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Payload of `vm_list_environments`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentList {
    /// Version of the built-in environment catalog.
    pub catalog_version: String,
    /// Every environment of the catalog.
    pub environments: Vec<EnvironmentEntry>,
}

/// One catalog environment with its install state.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentEntry {
    /// e.g. `debian:12`.
    pub name: String,
    /// Version of the environment (part of its cache directory name).
    pub version: String,
    /// What the environment is for, in one line.
    pub description: String,
    /// Packages a user can count on finding in it.
    pub default_packages: Vec<String>,
    /// Built and present in the local cache (usable without a build).
    pub installed: bool,
    /// Further facts: distribution, platform, OCI coordinates, cache and install paths.
    #[serde(flatten)]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// Payload of `vm_network_info`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct NetworkInfo {
    /// The VM described.
    pub vm_id: String,
    /// The VM was created with a network interface.
    pub network_enabled: bool,
    /// The guest should be able to reach the outside (true exactly when networking is on).
    pub outbound_connectivity_expected: bool,
    /// With networking: guest_ip, gateway_ip, subnet_cidr, dns_servers, mode, tap_name,
    /// mac_address. Without: reason.
    #[serde(flatten)]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// Convert an SDK `Value` payload into its typed view.
pub fn view<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> pyro::Result<T> {
    serde_json::from_value(v).map_err(|e| pyro::Error::Io(format!("unexpected payload shape: {e}")))
}
