//! Parsing `REGISTRY/REPOSITORY[:TAG][@sha256:<64 hex>]` by the distribution spec's grammar.

use super::Reference;
use crate::{OciError, Result};

/// What every reference error ends with, so the user sees the shape and an example.
const EXPECTED: &str = "expected REGISTRY/REPOSITORY[:TAG][@sha256:<64 hex>], e.g. 127.0.0.1:5000/team/debian-12:1.0.0";

/// Longest reference text accepted (the repository alone is limited to 255 by the spec).
const MAX_REFERENCE: usize = 1024;

/// Whether `digest` is `sha256:` followed by 64 lowercase hex digits: the only digest form
/// pyro accepts, and the only one that may become part of a path.
pub(crate) fn is_sha256_digest(digest: &str) -> bool {
    match digest.strip_prefix("sha256:") {
        Some(hex) => hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        None => false,
    }
}

pub(crate) fn parse(text: &str) -> Result<Reference> {
    let bad = |reason: String| OciError::InvalidReference {
        reference: text.to_string(),
        reason: format!("{reason}; {EXPECTED}"),
    };
    if text.is_empty() {
        return Err(bad("empty reference".into()));
    }
    if text.len() > MAX_REFERENCE {
        return Err(bad(format!("longer than {MAX_REFERENCE} characters")));
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => {
            if !is_sha256_digest(digest) {
                return Err(bad(format!("digest '{digest}' is not sha256: followed by 64 lowercase hex digits")));
            }
            (rest, Some(digest.to_string()))
        }
        None => (text, None),
    };
    let Some((registry, path)) = rest.split_once('/') else {
        return Err(
            bad("no registry part (pyro never assumes Docker Hub; write e.g. registry-1.docker.io/...)".into()),
        );
    };
    check_registry(registry).map_err(bad)?;
    // A ':' after the last '/' starts the tag; one before it belongs to nothing valid.
    let last_slash = path.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match path[last_slash..].find(':') {
        Some(i) => (&path[..last_slash + i], Some(&path[last_slash + i + 1..])),
        None => (path, None),
    };
    check_repository(repository).map_err(bad)?;
    if let Some(tag) = tag {
        check_tag(tag).map_err(bad)?;
    }
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_string()),
    };
    Ok(Reference { registry: registry.to_string(), repository: repository.to_string(), tag, digest })
}

fn check_registry(registry: &str) -> std::result::Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // [IPv6]:port
        let Some((addr, after)) = rest.split_once(']') else {
            return Err(format!("registry '{registry}' has an unclosed '['"));
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(format!("registry '{registry}' is not a valid [IPv6] address"));
        }
        match after {
            "" => (registry, None),
            p => match p.strip_prefix(':') {
                Some(port) => (registry, Some(port)),
                None => return Err(format!("registry '{registry}' has text after ']' that is not :PORT")),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u32>().unwrap_or(0) > 65535
        {
            return Err(format!("registry '{registry}' has an invalid port '{port}' (1-65535)"));
        }
    }
    if !host.starts_with('[') {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(format!(
                "registry host '{host}' is not a host name or IP address (letters, digits, '-' and '.')"
            ));
        }
        if port.is_none() && !host.contains('.') && host != "localhost" {
            return Err(format!(
                "'{registry}' is not a registry host: it needs a '.', a ':PORT' or to be 'localhost' \
                 (pyro never assumes Docker Hub; write e.g. registry-1.docker.io/{registry}/...)"
            ));
        }
    }
    Ok(())
}

/// Repository: `/`-separated components, each `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn check_repository(repository: &str) -> std::result::Result<(), String> {
    if repository.is_empty() {
        return Err("empty repository".into());
    }
    if repository.len() > 255 {
        return Err(format!("repository is {} characters (at most 255)", repository.len()));
    }
    for component in repository.split('/') {
        if !component_ok(component) {
            return Err(format!(
                "repository component '{component}' is not allowed: lowercase letters and digits, \
                 separated by '.', '_', '__' or dashes, starting and ending with a letter or digit"
            ));
        }
    }
    Ok(())
}

fn component_ok(component: &str) -> bool {
    let b = component.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn check_tag(tag: &str) -> std::result::Result<(), String> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag '{tag}' is not allowed: 1-128 of letters, digits, '_', '.', '-', not starting with '.' or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn ok(s: &str) -> Reference {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        match parse(s) {
            Ok(r) => panic!("{s} parsed as {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn accepts_the_forms() {
        let r = ok("127.0.0.1:5000/team/debian-12:1.0.0");
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("127.0.0.1:5000", "team/debian-12"));
        assert_eq!(r.tag.as_deref(), Some("1.0.0"));
        assert_eq!(r.digest, None);
        let r = ok("ghcr.io/a/b");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = ok(&format!("localhost/x@{D}"));
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(D)));
        let r = ok(&format!("localhost:5000/x/y__z.w-v--u:T_1.a-b@{D}"));
        assert_eq!(r.repository, "x/y__z.w-v--u");
        assert_eq!(r.tag.as_deref(), Some("T_1.a-b"));
        assert_eq!(r.whole(), format!("localhost:5000/x/y__z.w-v--u:T_1.a-b@{D}"));
        let r = ok("[::1]:5000/r:t");
        assert_eq!(r.registry, "[::1]:5000");
        assert_eq!(ok(&format!("h.io/r:{}", "a".repeat(128))).tag.unwrap().len(), 128);
    }

    #[test]
    fn rejects_with_reasons() {
        assert!(err("debian:12").contains("no registry part"));
        assert!(err("library/debian:12").contains("not a registry host"));
        assert!(err("h.io/Team/x").contains("component 'Team'"));
        assert!(err("h.io/a//b").contains("component ''"));
        assert!(err("h.io/a-/b").contains("component 'a-'"));
        assert!(err("h.io/a___b").contains("'a___b'"));
        assert!(err("h.io/a.-b").contains("'a.-b'"));
        assert!(err("h.io/r:.t").contains("tag '.t'"));
        assert!(err("h.io/r:").contains("tag ''"));
        assert!(err(&format!("h.io/r:{}", "a".repeat(129))).contains("tag"));
        assert!(err("h.io/r@sha256:abc").contains("64 lowercase hex"));
        assert!(err(&format!("h.io/r@{}", D.to_uppercase().replace("SHA256", "sha256"))).contains("hex"));
        assert!(err("h_x.io/r").contains("host name"));
        assert!(err("h.io:99999/r").contains("port"));
        assert!(err("h.io:/r").contains("port"));
        assert!(err("").contains("empty"));
        assert!(err("h.io/").contains("empty repository"));
        // Every error shows the expected shape with an example.
        assert!(err("x").contains("e.g. 127.0.0.1:5000/team/debian-12:1.0.0"));
    }

    #[test]
    fn digest_form() {
        assert!(is_sha256_digest(D));
        assert!(!is_sha256_digest(&D.replace('a', "A")));
        assert!(!is_sha256_digest(&D[..D.len() - 1]));
        assert!(!is_sha256_digest(&D.replace("sha256", "sha512")));
        assert!(!is_sha256_digest("sha256:../../../../etc/passwd0000000000000000000000000000000000000"));
    }
}
