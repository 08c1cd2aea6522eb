//! Resource and timeout limits (SPECIFICATION.md, "Limits"), checked before anything is
//! created.

use crate::{Error, Result};

/// Allowed virtual CPU counts, inclusive: 1..=8.
pub const VCPU_RANGE: (u32, u32) = (1, 8);
/// Allowed guest memory in MiB, inclusive: 256..=32768.
pub const MEM_MIB_RANGE: (u32, u32) = (256, 32768);
/// Allowed time to live in seconds, inclusive: 60..=3600.
pub const TTL_RANGE: (u64, u64) = (60, 3600);
/// Longest exec timeout accepted (a day): beyond that a command is a service, not an exec.
pub const MAX_EXEC_TIMEOUT_SECONDS: u64 = 86_400;

/// Check vCPU count, memory and TTL against [`VCPU_RANGE`], [`MEM_MIB_RANGE`] and [`TTL_RANGE`];
/// [`Error::InvalidInput`] naming the first value out of range.
pub fn validate_resources(vcpu_count: u32, mem_mib: u32, ttl_seconds: u64) -> Result<()> {
    if !(VCPU_RANGE.0..=VCPU_RANGE.1).contains(&vcpu_count) {
        return Err(Error::InvalidInput(format!(
            "vcpu_count must be between {} and {} (got {vcpu_count})",
            VCPU_RANGE.0, VCPU_RANGE.1
        )));
    }
    if !(MEM_MIB_RANGE.0..=MEM_MIB_RANGE.1).contains(&mem_mib) {
        return Err(Error::InvalidInput(format!(
            "mem_mib must be between {} and {} (got {mem_mib})",
            MEM_MIB_RANGE.0, MEM_MIB_RANGE.1
        )));
    }
    if !(TTL_RANGE.0..=TTL_RANGE.1).contains(&ttl_seconds) {
        return Err(Error::InvalidInput(format!(
            "ttl_seconds must be between {} and {} (got {ttl_seconds})",
            TTL_RANGE.0, TTL_RANGE.1
        )));
    }
    Ok(())
}

/// Check an exec timeout: 1..=[`MAX_EXEC_TIMEOUT_SECONDS`] seconds;
/// [`Error::InvalidInput`] otherwise.
pub fn validate_exec_timeout(timeout_seconds: u64) -> Result<()> {
    if timeout_seconds == 0 {
        return Err(Error::InvalidInput("timeout_seconds must be positive".into()));
    }
    if timeout_seconds > MAX_EXEC_TIMEOUT_SECONDS {
        return Err(Error::InvalidInput(format!(
            "timeout_seconds must be at most {MAX_EXEC_TIMEOUT_SECONDS} (got {timeout_seconds})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_accept_the_edges_and_reject_outside() {
        assert!(validate_resources(1, 256, 60).is_ok());
        assert!(validate_resources(8, 32768, 3600).is_ok());
        let e = validate_resources(0, 1024, 600).unwrap_err().to_string();
        assert!(e.contains("vcpu_count must be between 1 and 8"), "{e}");
        let e = validate_resources(1, 128, 600).unwrap_err().to_string();
        assert!(e.contains("mem_mib must be between 256 and 32768 (got 128)"), "{e}");
        let e = validate_resources(1, 1024, 59).unwrap_err().to_string();
        assert!(e.contains("ttl_seconds"), "{e}");
        assert!(validate_exec_timeout(0).is_err());
        assert!(validate_exec_timeout(30).is_ok());
    }
}
