//! Workspace secrets: declared at create, kept on the host 0600 under the workspace dir,
//! installed into the guest's tmpfs `/run/pyro-secrets` on every boot, injected into single
//! commands with `secret_env`, and redacted from everything pyro returns or records.

use super::store::{SecretRecord, WorkspaceDir};
use crate::{Error, Result};
use pyro_tree::names::{validate_env_var_name, validate_secret_name};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

/// Largest secret value (UTF-8 bytes).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// What replaces a secret value in any output.
pub const REDACTED: &str = pyro_protocol::session::REDACTED;

/// One secret of `create_workspace`: exactly one of `value` / `file_path`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SecretSpec {
    /// Secret name, `[A-Za-z_][A-Za-z0-9_]{0,63}`, unique in the workspace. It names the guest file
    /// `/run/pyro-secrets/<name>` and the key of `secret_env`.
    pub name: String,
    /// The value itself: non-empty UTF-8, at most 64 KiB.
    pub value: Option<String>,
    /// A host file holding the value (read once at create): a regular UTF-8 file, non-empty, at
    /// most 64 KiB.
    pub file_path: Option<PathBuf>,
}

/// A validated secret, ready to store.
pub(crate) struct Prepared {
    pub name: String,
    pub source_kind: &'static str,
    pub value: String,
}

/// Never prints the value, so a stray `{:?}` cannot leak it.
impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("name", &self.name).field("source_kind", &self.source_kind).finish()
    }
}

/// Validate every secret before anything is created.
pub(crate) fn prepare(specs: &[SecretSpec]) -> Result<Vec<Prepared>> {
    let mut out: Vec<Prepared> = Vec::new();
    for s in specs {
        let name = validate_secret_name(&s.name)?;
        if out.iter().any(|p| p.name == name) {
            return Err(Error::InvalidInput(format!("secret '{name}' is declared more than once")));
        }
        let (source_kind, value) = match (&s.value, &s.file_path) {
            (Some(v), None) => ("literal", v.clone()),
            (None, Some(p)) => {
                let meta = std::fs::metadata(p).map_err(|_| {
                    Error::InvalidInput(format!("secret file for '{name}' does not exist: {}", p.display()))
                })?;
                if !meta.is_file() {
                    return Err(Error::InvalidInput(format!(
                        "secret file for '{name}' is not a regular file: {}",
                        p.display()
                    )));
                }
                if meta.len() as usize > MAX_SECRET_BYTES {
                    return Err(Error::InvalidInput(format!(
                        "secret '{name}' must be at most {MAX_SECRET_BYTES} bytes (file {} has {})",
                        p.display(),
                        meta.len()
                    )));
                }
                let bytes = std::fs::read(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::InvalidInput(format!("secret file for '{name}' is not UTF-8 text: {}", p.display()))
                })?;
                ("file", text)
            }
            _ => {
                return Err(Error::InvalidInput(format!("secret '{name}' needs exactly one of a value or a file path")))
            }
        };
        if value.is_empty() {
            return Err(Error::InvalidInput(format!("secret '{name}' must not be empty")));
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(Error::InvalidInput(format!("secret '{name}' must be at most {MAX_SECRET_BYTES} bytes")));
        }
        out.push(Prepared { name, source_kind, value });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn secrets_dir(dir: &WorkspaceDir) -> PathBuf {
    dir.root.join("secrets")
}

/// Store the host copies (dir 0700, files 0600) and return the public records.
pub(crate) fn store(dir: &WorkspaceDir, secrets: &[Prepared]) -> Result<Vec<SecretRecord>> {
    if secrets.is_empty() {
        return Ok(Vec::new());
    }
    let d = secrets_dir(dir);
    std::fs::create_dir_all(&d).map_err(|e| Error::io("creating the secrets dir", e))?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("securing the secrets dir", e))?;
    for s in secrets {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(d.join(format!("{}.secret", s.name)))
            .map_err(|e| Error::io("storing a secret", e))?;
        f.write_all(s.value.as_bytes()).map_err(|e| Error::io("storing a secret", e))?;
    }
    Ok(secrets.iter().map(|s| SecretRecord { name: s.name.clone(), source_kind: s.source_kind.into() }).collect())
}

/// (name, value) of every stored secret.
pub(crate) fn load(dir: &WorkspaceDir, records: &[SecretRecord]) -> Result<Vec<(String, String)>> {
    records
        .iter()
        .map(|r| {
            let p = secrets_dir(dir).join(format!("{}.secret", r.name));
            std::fs::read_to_string(&p)
                .map(|v| (r.name.clone(), v))
                .map_err(|e| Error::io(format!("reading secret '{}'", r.name), e))
        })
        .collect()
}

/// Put the secrets into the guest's tmpfs `/run/pyro-secrets`.
pub(crate) async fn install(vm: &pyro_vmm::Machine, secrets: &[(String, String)]) -> Result<()> {
    let files = secrets
        .iter()
        .map(|(n, v)| pyro_protocol::fs::SecretFile { name: n.clone(), value: v.as_bytes().to_vec() })
        .collect();
    Ok(vm.install_secrets(files).await?)
}

/// `secret_env` {SECRET: ENV_VAR} → {ENV_VAR: value}.
pub(crate) fn env_for(
    secret_env: &BTreeMap<String, String>,
    secrets: &[(String, String)],
) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for (secret, var) in secret_env {
        let secret = validate_secret_name(secret)?;
        let var = validate_env_var_name(var)?;
        let value =
            secrets.iter().find(|(n, _)| *n == secret).map(|(_, v)| v.clone()).ok_or_else(|| {
                Error::InvalidInput(format!("secret_env references unknown workspace secret '{secret}'"))
            })?;
        env.insert(var, value);
    }
    Ok(env)
}

/// Replace every secret value (longest first, so a value containing another is fully
/// hidden) with `[REDACTED]`.
pub(crate) fn redact(text: &str, secrets: &[(String, String)]) -> String {
    let mut values: Vec<&str> = secrets.iter().map(|(_, v)| v.as_str()).filter(|v| !v.is_empty()).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for v in values {
        if out.contains(v) {
            out = out.replace(v, REDACTED);
        }
    }
    out
}

/// Errors from a command, shell or service path can echo its output: hide secret values
/// there too, keeping the error's class.
pub(crate) fn redact_error(e: impl Into<Error>, secrets: &[(String, String)]) -> Error {
    let e = e.into();
    if secrets.is_empty() {
        return e;
    }
    let msg = redact(&e.to_string(), secrets);
    match e {
        Error::InvalidInput(_) => Error::InvalidInput(msg),
        Error::NotFound(_) => Error::NotFound(msg),
        Error::InvalidState(_) => Error::InvalidState(msg),
        _ => Error::Guest(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rejects_bad_specs_before_anything_exists() {
        let lit = |n: &str, v: &str| SecretSpec { name: n.into(), value: Some(v.into()), file_path: None };
        assert!(prepare(&[lit("API_TOKEN", "x")]).is_ok());
        assert!(prepare(&[lit("1BAD", "x")]).is_err());
        assert!(prepare(&[lit("A", "")]).unwrap_err().to_string().contains("must not be empty"));
        assert!(prepare(&[lit("A", "x"), lit("A", "y")]).unwrap_err().to_string().contains("more than once"));
        let missing = SecretSpec { name: "F".into(), value: None, file_path: Some("/no/such/file".into()) };
        assert!(prepare(&[missing]).unwrap_err().to_string().contains("does not exist"));
        let both = SecretSpec { name: "B".into(), value: Some("x".into()), file_path: Some("/etc/hostname".into()) };
        assert!(prepare(&[both]).unwrap_err().to_string().contains("exactly one"));
        let big = lit("BIG", &"x".repeat(MAX_SECRET_BYTES + 1));
        assert!(prepare(&[big]).is_err());
    }

    #[test]
    fn redaction_hides_overlapping_values() {
        let s = vec![("A".to_string(), "abc".to_string()), ("B".to_string(), "abcdef".to_string())];
        assert_eq!(redact("x abcdef y abc", &s), "x [REDACTED] y [REDACTED]");
        let env = env_for(&BTreeMap::from([("A".to_string(), "MY_A".to_string())]), &s).unwrap();
        assert_eq!(env["MY_A"], "abc");
        let e = env_for(&BTreeMap::from([("C".to_string(), "C".to_string())]), &s).unwrap_err();
        assert_eq!(e.to_string(), "secret_env references unknown workspace secret 'C'");
    }
}
