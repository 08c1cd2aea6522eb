//! Pure, host-side workspace logic: validation of names and paths, tar building and safe
//! extraction, tree diffs and patch application.
//!
//! Nothing here talks to a VM or the network, so all of it is unit-tested on the host. The
//! engine (`workspace::ops`) calls these before and after talking to the guest.

pub mod archive;
pub mod diff;
pub mod names;
pub mod patch;
pub mod paths;
pub mod text;
