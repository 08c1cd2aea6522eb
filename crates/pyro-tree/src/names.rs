//! Validators for user-chosen names: workspace names, labels, snapshots, services, secrets.
//!
//! Every validator trims its input and returns the value to store, so callers never keep an
//! untrimmed name by accident. Lengths count characters (not bytes), as the reference does.

use crate::{Error, Result};

/// Longest workspace name and label value, in characters.
pub const MAX_TEXT_CHARS: usize = 120;
/// The implicit snapshot every workspace has; it cannot be created or deleted by name.
pub const BASELINE_SNAPSHOT: &str = "baseline";

/// What the label-key rule allows, for error messages (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`).
const KEY_RULE: &str = "use 1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit";
/// What the identifier rule allows, for error messages (`^[A-Za-z_][A-Za-z0-9_]{0,63}$`).
const IDENT_RULE: &str = "use 1-64 characters: letters, digits or '_', not starting with a digit";

/// Validate a workspace name: trimmed, non-empty, at most 120 characters.
pub fn validate_workspace_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::Invalid("name must not be empty".into()));
    }
    if name.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::Invalid(format!("name must be at most {MAX_TEXT_CHARS} characters")));
    }
    Ok(name.to_string())
}

/// Validate a label key against `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` (after trimming).
pub fn validate_label_key(key: &str) -> Result<String> {
    check_key_like("label key", key)
}

/// Validate a label value: trimmed, non-empty, at most 120 characters, no line breaks.
pub fn validate_label_value(value: &str) -> Result<String> {
    label_value("label value", value)
}

/// Validate a label pair; errors about the value name the key it belongs to.
pub fn validate_label(key: &str, value: &str) -> Result<(String, String)> {
    let key = validate_label_key(key)?;
    let value = label_value(&format!("label value for '{key}'"), value)?;
    Ok((key, value))
}

/// Validate a snapshot name against the label-key rule (used for lookups, reset and delete).
pub fn validate_snapshot_name(name: &str) -> Result<String> {
    check_key_like("snapshot name", name)
}

/// Validate the name of a snapshot about to be created: the key rule, and not `baseline`.
pub fn validate_new_snapshot_name(name: &str) -> Result<String> {
    let name = validate_snapshot_name(name)?;
    if name == BASELINE_SNAPSHOT {
        return Err(Error::Invalid(format!("snapshot name '{BASELINE_SNAPSHOT}' is reserved")));
    }
    Ok(name)
}

/// Validate a service name against the label-key rule.
pub fn validate_service_name(name: &str) -> Result<String> {
    check_key_like("service name", name)
}

/// Validate a secret name against `^[A-Za-z_][A-Za-z0-9_]{0,63}$` (after trimming).
pub fn validate_secret_name(name: &str) -> Result<String> {
    check_identifier("secret name", name)
}

/// Validate an environment variable name (as used in `secret_env`) like a secret name.
pub fn validate_env_var_name(name: &str) -> Result<String> {
    check_identifier("environment variable name", name)
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, checked by hand: the rule is small and a regex
/// engine would be the only reason for a dependency.
fn is_key_like(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Whether `s` is exactly (untrimmed) `^[A-Za-z_][A-Za-z0-9_]{0,63}$`: a portable shell
/// identifier, the rule of secret and environment variable names. The guest agent checks
/// secret names it is asked to install with it, so it accepts exactly what the host does.
pub fn is_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn check_key_like(what: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::Invalid(format!("{what} must not be empty")));
    }
    if !is_key_like(v) {
        return Err(Error::Invalid(format!("{what} '{}' is invalid: {KEY_RULE}", v.escape_debug())));
    }
    Ok(v.to_string())
}

fn check_identifier(what: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::Invalid(format!("{what} must not be empty")));
    }
    if !is_identifier(v) {
        return Err(Error::Invalid(format!("{what} '{}' is invalid: {IDENT_RULE}", v.escape_debug())));
    }
    Ok(v.to_string())
}

fn label_value(what: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::Invalid(format!("{what} must not be empty")));
    }
    if v.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::Invalid(format!("{what} must be at most {MAX_TEXT_CHARS} characters")));
    }
    // Trimming removed outer line breaks; inner ones would break the one-line list output.
    if v.contains(['\n', '\r']) {
        return Err(Error::Invalid(format!("{what} must not contain line breaks")));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn workspace_names_are_trimmed_and_bounded() {
        assert_eq!(validate_workspace_name("  my ws ").unwrap(), "my ws");
        assert_eq!(msg(validate_workspace_name("   ")), "name must not be empty");
        assert!(validate_workspace_name(&"é".repeat(120)).is_ok(), "120 characters, 240 bytes");
        assert_eq!(msg(validate_workspace_name(&"x".repeat(121))), "name must be at most 120 characters");
    }

    #[test]
    fn label_keys_follow_the_key_rule() {
        for ok in ["a", "A1", "9", "app.kubernetes.io", "a_b-c", &"k".repeat(64)] {
            assert_eq!(validate_label_key(ok).unwrap(), ok);
        }
        for bad in ["-a", ".a", "_a", "a b", "a/b", "ä", &"k".repeat(65)] {
            assert!(msg(validate_label_key(bad)).contains("is invalid"), "{bad}");
        }
        assert_eq!(msg(validate_label_key(" ")), "label key must not be empty");
    }

    #[test]
    fn label_values_are_single_line_and_bounded() {
        assert_eq!(validate_label("team", "  core  ").unwrap(), ("team".into(), "core".into()));
        assert_eq!(msg(validate_label("team", " ")), "label value for 'team' must not be empty");
        assert_eq!(msg(validate_label_value("a\nb")), "label value must not contain line breaks");
        assert_eq!(msg(validate_label_value("a\rb")), "label value must not contain line breaks");
        assert!(validate_label_value("trailing newline is trimmed\n").is_ok());
        assert!(msg(validate_label_value(&"v".repeat(121))).contains("at most 120"));
    }

    #[test]
    fn snapshot_and_service_names() {
        assert_eq!(validate_snapshot_name("before-refactor.1").unwrap(), "before-refactor.1");
        assert_eq!(validate_snapshot_name("baseline").unwrap(), "baseline");
        assert_eq!(msg(validate_new_snapshot_name("baseline")), "snapshot name 'baseline' is reserved");
        assert!(msg(validate_snapshot_name("a b")).starts_with("snapshot name 'a b' is invalid"));
        assert_eq!(validate_service_name("web").unwrap(), "web");
        assert!(validate_service_name("../web").is_err());
    }

    #[test]
    fn secret_and_env_names_are_identifiers() {
        for ok in ["A", "_", "API_TOKEN", "a1", &format!("A{}", "_".repeat(63))] {
            assert!(validate_secret_name(ok).is_ok(), "{ok}");
            assert!(validate_env_var_name(ok).is_ok(), "{ok}");
        }
        for bad in ["1A", "A-B", "A.B", "A B", &"A".repeat(65)] {
            assert!(validate_secret_name(bad).is_err(), "{bad}");
            assert!(validate_env_var_name(bad).is_err(), "{bad}");
        }
        assert_eq!(msg(validate_env_var_name("")), "environment variable name must not be empty");
    }
}
