//! Where a registry client's settings come from: credentials (environment, Docker config
//! file) and which hosts are reached over plain HTTP.

use crate::{OciError, Result};
use base64::Engine as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The Docker config file is read up to this size; a larger one is refused, not truncated.
const MAX_DOCKER_CONFIG: u64 = 1 << 20;

/// A user name and password for one registry, and where they were found (for error messages;
/// never the secret itself).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
    /// Where they came from, e.g. `PYRO_REGISTRY_USERNAME/PYRO_REGISTRY_PASSWORD`.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} from {}, password redacted)", self.username, self.source)
    }
}

/// How a [`super::Registry`] reaches its registry. [`RegistryOptions::from_env`] is what
/// [`super::Registry::new`] uses; tests build one directly.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Credentials, or `None` for anonymous access (with the registry's bearer token flow).
    pub credentials: Option<Credentials>,
    /// Hosts (`host` or `host:port`) reached over plain HTTP besides loopback ones.
    pub insecure_hosts: Vec<String>,
}

impl RegistryOptions {
    /// Options for `registry` from the process environment: `PYRO_REGISTRY_USERNAME` +
    /// `PYRO_REGISTRY_PASSWORD`, else the Docker config file (`$DOCKER_CONFIG/config.json`,
    /// else `$HOME/.docker/config.json`); `PYRO_REGISTRY_INSECURE` (comma-separated hosts).
    pub fn from_env(registry: &str) -> Result<RegistryOptions> {
        RegistryOptions::from_lookup(registry, |name| std::env::var(name).ok())
    }

    /// [`RegistryOptions::from_env`] with the variables read through `lookup`.
    pub fn from_lookup(registry: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<RegistryOptions> {
        let insecure_hosts = lookup("PYRO_REGISTRY_INSECURE")
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        let user = lookup("PYRO_REGISTRY_USERNAME").filter(|s| !s.is_empty());
        let pass = lookup("PYRO_REGISTRY_PASSWORD");
        let credentials = match (user, pass) {
            (Some(username), Some(password)) => {
                Some(Credentials { username, password, source: "PYRO_REGISTRY_USERNAME/PYRO_REGISTRY_PASSWORD".into() })
            }
            (Some(_), None) => {
                return Err(OciError::Unauthorized {
                    registry: registry.to_string(),
                    detail: "PYRO_REGISTRY_USERNAME is set but PYRO_REGISTRY_PASSWORD is not: set both".into(),
                })
            }
            _ => {
                let dir = match (lookup("DOCKER_CONFIG"), lookup("HOME")) {
                    (Some(d), _) if !d.is_empty() => Some(PathBuf::from(d)),
                    (_, Some(h)) if !h.is_empty() => Some(Path::new(&h).join(".docker")),
                    _ => None,
                };
                match dir {
                    Some(dir) => docker_config_credentials(&dir.join("config.json"), registry)?,
                    None => None,
                }
            }
        };
        Ok(RegistryOptions { credentials, insecure_hosts })
    }
}

/// The credentials for `registry` in a Docker config file (`auths.<registry>.auth`, base64
/// of `user:password`, or `username` + `password`); keys may carry a scheme and a path
/// (`https://<registry>/v1/`). `Ok(None)` when the file or the entry does not exist.
pub fn docker_config_credentials(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(OciError::io(format!("read Docker config {}", path.display()), e)),
    };
    let mut text = Vec::new();
    file.take(MAX_DOCKER_CONFIG + 1)
        .read_to_end(&mut text)
        .map_err(|e| OciError::io(format!("read Docker config {}", path.display()), e))?;
    if text.len() as u64 > MAX_DOCKER_CONFIG {
        return Err(OciError::TooLarge {
            what: format!("Docker config {}", path.display()),
            size: text.len() as u64,
            limit: MAX_DOCKER_CONFIG,
        });
    }
    let bad = |why: String| OciError::Unauthorized {
        registry: registry.to_string(),
        detail: format!("Docker config {}: {why}", path.display()),
    };
    let json: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let host_of = |key: &str| {
        let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
        k.split('/').next().unwrap_or("").to_string()
    };
    // An exact key wins over one with a scheme or path.
    let entry = auths.get(registry).or_else(|| auths.iter().find(|(k, _)| host_of(k) == registry).map(|(_, v)| v));
    let Some(entry) = entry else { return Ok(None) };
    let source = format!("Docker config {}", path.display());
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()).filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| bad(format!("auths.{registry}.auth is not base64: {e}")))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad(format!("auths.{registry}.auth is not UTF-8")))?;
        let Some((username, password)) = decoded.split_once(':') else {
            return Err(bad(format!("auths.{registry}.auth is not base64 of user:password")));
        };
        return Ok(Some(Credentials { username: username.into(), password: password.into(), source }));
    }
    match (entry.get("username").and_then(|u| u.as_str()), entry.get("password").and_then(|p| p.as_str())) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials { username: u.into(), password: p.into(), source })),
        // An entry with neither (credential helpers keep the secret elsewhere): anonymous.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn docker_config_forms() {
        let d = tempfile::tempdir().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("u:p:w");
        let p = write(
            d.path(),
            &format!(
                r#"{{"auths":{{"https://r.io/v1/":{{"auth":"{b64}"}},"x.io":{{"username":"a","password":"b"}}}}}}"#
            ),
        );
        let c = docker_config_credentials(&p, "r.io").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
        let c = docker_config_credentials(&p, "x.io").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("a", "b"));
        assert!(docker_config_credentials(&p, "y.io").unwrap().is_none());
        assert!(docker_config_credentials(&d.path().join("none.json"), "y.io").unwrap().is_none());
        let p = write(d.path(), r#"{"auths":{"r.io":{"auth":"!!"}}}"#);
        assert!(matches!(docker_config_credentials(&p, "r.io"), Err(OciError::Unauthorized { .. })));
        let p = write(d.path(), &" ".repeat((MAX_DOCKER_CONFIG + 1) as usize));
        assert!(matches!(docker_config_credentials(&p, "r.io"), Err(OciError::TooLarge { .. })));
    }

    #[test]
    fn env_lookup_order() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), r#"{"auths":{"r.io":{"username":"cfg","password":"x"}}}"#);
        let dir = d.path().to_str().unwrap().to_string();
        let env = |pairs: Vec<(&'static str, String)>| {
            move |n: &str| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())
        };
        let o = RegistryOptions::from_lookup("r.io", env(vec![("DOCKER_CONFIG", dir.clone())])).unwrap();
        assert_eq!(o.credentials.unwrap().username, "cfg");
        let o = RegistryOptions::from_lookup(
            "r.io",
            env(vec![
                ("DOCKER_CONFIG", dir.clone()),
                ("PYRO_REGISTRY_USERNAME", "envu".into()),
                ("PYRO_REGISTRY_PASSWORD", "envp".into()),
                ("PYRO_REGISTRY_INSECURE", " a.io , b.io:5000,".into()),
            ]),
        )
        .unwrap();
        assert_eq!(o.credentials.unwrap().username, "envu");
        assert_eq!(o.insecure_hosts, vec!["a.io", "b.io:5000"]);
        let o = RegistryOptions::from_lookup("r.io", env(vec![("HOME", "/nonexistent-home".into())])).unwrap();
        assert!(o.credentials.is_none());
        assert!(RegistryOptions::from_lookup("r.io", env(vec![("PYRO_REGISTRY_USERNAME", "u".into())])).is_err());
    }
}
