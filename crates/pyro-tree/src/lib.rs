//! pyro's tree rules: what a workspace path, a user-chosen name, a tar member, a patch and a
//! tree diff may be, and how text from the guest is cut for payloads.
//!
//! Nothing here talks to a VM, a supervisor or the network: every rule is a function of its
//! input (and, for the host-side archive code, of a host directory), so all of it is
//! unit-tested and fuzzed without booting anything. The engine (`pyro`) calls these before
//! and after talking to the guest; the guest agent (`pyro-agent`) uses the same archive
//! member rule when it extracts, so host and guest cannot disagree on what a member may be.
//!
//! Cargo features keep the guest small: `archive` (tar reading and member validation) is
//! all the agent links; `host` adds seed sources, gzip, safe host extraction and exports;
//! `diff` adds the tree diff; `schema` derives JSON Schemas of the diff payload.

#![deny(missing_docs)]

#[cfg(feature = "archive")]
pub mod archive;
#[cfg(feature = "diff")]
pub mod diff;
pub mod error;
#[cfg(feature = "host")]
pub mod listed;
pub mod member;
pub mod names;
pub mod patch;
pub mod paths;
pub mod text;

pub use error::{Error, Result};
