//! The bearer token every Streamable HTTP request must carry.
//!
//! The HTTP port is reachable by every local user, by browsers and (through QEMU's user
//! network) possibly by guests, so a loopback bind is no authentication. The token is chosen
//! in this order: `--token-file PATH`, `--token VALUE` (kept for compatibility; visible in
//! `ps`), `$PYRO_MCP_TOKEN`, else the server's own token at `$PYRO_HOME/mcp-token`, made from
//! 32 random bytes the first time it is needed, mode 0600 (`pyro mcp token` prints it).

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Environment variable that overrides the stored token.
pub const TOKEN_ENV: &str = "PYRO_MCP_TOKEN";
/// File name of the stored token under `$PYRO_HOME`.
pub const TOKEN_FILE_NAME: &str = "mcp-token";
/// Shortest token accepted: a short token can be guessed over loopback at HTTP speed.
pub const MIN_TOKEN_CHARS: usize = 16;
/// Longest token accepted (a token file is read no further than this).
pub const MAX_TOKEN_CHARS: usize = 4096;

/// The token a server uses, and where it came from (for the start-up line; never the value).
#[derive(Clone)]
pub struct HttpToken {
    /// The secret clients must present.
    pub value: String,
    /// Where it came from (`--token`, `--token-file PATH`, the environment variable, or
    /// the stored file), for the start-up line.
    pub source: String,
    /// Chosen by the operator (file, flag or environment) rather than the stored one.
    pub explicit: bool,
}

impl std::fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpToken").field("source", &self.source).finish_non_exhaustive()
    }
}

/// Where the server's own token lives.
pub fn stored_token_path(pyro_home: &Path) -> PathBuf {
    pyro_home.join(TOKEN_FILE_NAME)
}

/// Check a token: 16..=4096 visible ASCII characters (it travels in an HTTP header).
pub fn validate_token(token: &str) -> Result<(), String> {
    let n = token.chars().count();
    if !(MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&n) {
        return Err(format!(
            "the MCP bearer token must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters long (got {n})"
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the MCP bearer token may only contain visible ASCII characters (no spaces)".into());
    }
    Ok(())
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

/// Read a token file: the first line, surrounding whitespace trimmed. The file must not be
/// readable or writable by other users.
pub fn read_token_file(path: &Path) -> std::io::Result<String> {
    let file = std::fs::File::open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot read the token file {}: {e}", path.display())))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(invalid(format!("the token file {} is not a regular file", path.display())));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(invalid(format!(
            "the token file {} is accessible to other users (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    let mut text = String::new();
    file.take(MAX_TOKEN_CHARS as u64 + 2).read_to_string(&mut text)?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    validate_token(&token).map_err(|e| invalid(format!("{e} (in {})", path.display())))?;
    Ok(token)
}

/// The server's own token: read from `$PYRO_HOME/mcp-token`, or generated and stored there
/// (0600, in a 0700 directory if it has to create one) the first time.
pub fn load_or_create_stored_token(pyro_home: &Path) -> std::io::Result<String> {
    let path = stored_token_path(pyro_home);
    if path.exists() {
        return read_token_file(&path);
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(pyro_home)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(format!("no randomness for the MCP token: {e}")))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Write a temp file and hard-link it into place: a concurrent first start either wins or
    // finds the other's complete token, never a half-written one.
    let tmp = pyro_home.join(format!(".{TOKEN_FILE_NAME}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(format!("{token}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, &path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(token),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_token_file(&path),
        Err(e) => Err(std::io::Error::new(e.kind(), format!("cannot store the MCP token at {}: {e}", path.display()))),
    }
}

/// Choose the token of an HTTP server: `token_file`, then `flag` (`--token`), then
/// `$PYRO_MCP_TOKEN`, then the stored token (created if missing).
pub fn resolve_http_token(
    pyro_home: &Path,
    token_file: Option<&Path>,
    flag: Option<String>,
) -> std::io::Result<HttpToken> {
    if let Some(path) = token_file {
        return Ok(HttpToken {
            value: read_token_file(path)?,
            source: format!("--token-file {}", path.display()),
            explicit: true,
        });
    }
    if let Some(value) = flag {
        validate_token(&value).map_err(|e| invalid(format!("--token: {e}")))?;
        return Ok(HttpToken { value, source: "--token".into(), explicit: true });
    }
    if let Some(value) = std::env::var_os(TOKEN_ENV) {
        let value = value.to_string_lossy().trim().to_string();
        validate_token(&value).map_err(|e| invalid(format!("{TOKEN_ENV}: {e}")))?;
        return Ok(HttpToken { value, source: format!("${TOKEN_ENV}"), explicit: true });
    }
    let value = load_or_create_stored_token(pyro_home)?;
    let path = stored_token_path(pyro_home);
    Ok(HttpToken { value, source: format!("{} (`pyro mcp token` prints it)", path.display()), explicit: false })
}

/// Constant-time comparison of a presented token with the expected one (no early exit on the
/// first differing byte, so timing does not reveal how much of a guess was right).
pub fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ e;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_token_is_generated_once_private_and_random() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let a = load_or_create_stored_token(&home).unwrap();
        assert_eq!(a.len(), 64);
        assert!(validate_token(&a).is_ok());
        let mode = std::fs::metadata(stored_token_path(&home)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(load_or_create_stored_token(&home).unwrap(), a, "the token is stable across starts");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create_stored_token(other.path()).unwrap(), a);
    }

    #[test]
    fn token_files_readable_by_others_or_too_short_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_token_file(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "0123456789abcdef0123");
        std::fs::write(&path, "short\n").unwrap();
        let e = read_token_file(&path).unwrap_err().to_string();
        assert!(e.contains("16 to 4096 characters"), "{e}");
        let e = resolve_http_token(tmp.path(), None, Some("has space in the token".into())).unwrap_err();
        assert!(e.to_string().contains("visible ASCII"), "{e}");
    }

    #[test]
    fn token_comparison() {
        assert!(token_matches(b"abc", b"abc"));
        assert!(!token_matches(b"abc", b"abd"));
        assert!(!token_matches(b"abc", b"ab"));
        assert!(!token_matches(b"ab", b"abc"));
        assert!(!token_matches(b"", b"abc"));
        // Lengths that differ by a multiple of 256 still differ.
        assert!(!token_matches(&[b'a'; 256], &[]));
    }
}
