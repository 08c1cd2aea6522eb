//! Where a registry client's settings come from: credentials (environment, Docker config
//! file) and which hosts are reached over plain HTTP.

use crate::{OciError, Result};
use base64::Engine as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The Docker config file is read up to this size; a larger one is refused, not truncated.
const MAX_DOCKER_CONFIG: u64 = 1 << 20;
/// A credential helper's answer is read up to this size.
const MAX_HELPER_OUTPUT: u64 = 64 << 10;
/// A credential helper that has not answered after this long is killed.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
                let path = lookup("PATH").unwrap_or_default();
                match dir {
                    Some(dir) => docker_config_credentials_with_helpers(
                        &dir.join("config.json"),
                        registry,
                        &path,
                        HELPER_TIMEOUT,
                    )?,
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
/// Credential helpers are not run (see [`docker_config_credentials_with_helpers`]).
pub fn docker_config_credentials(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let Some(json) = read_docker_config(path, registry)? else { return Ok(None) };
    inline_credentials(&json, path, registry)
}

/// [`docker_config_credentials`], with Docker's credential helpers: `credHelpers.<registry>`
/// first, then the inline `auths` entry, then `credsStore`. A helper is the program
/// `docker-credential-<name>` found in `search_path` (a `PATH` value), run as `get` with the
/// registry on its stdin; its answer is read up to 64 KiB and it is killed after `timeout`.
/// "credentials not found" from a helper means anonymous.
pub fn docker_config_credentials_with_helpers(
    path: &Path,
    registry: &str,
    search_path: &str,
    timeout: std::time::Duration,
) -> Result<Option<Credentials>> {
    let Some(json) = read_docker_config(path, registry)? else { return Ok(None) };
    fn helper_name(v: Option<&serde_json::Value>) -> Option<&str> {
        v.and_then(|h| h.as_str()).filter(|h| !h.is_empty())
    }
    if let Some(helper) = helper_name(json.get("credHelpers").and_then(|h| h.get(registry))) {
        return run_credential_helper(helper, path, registry, search_path, timeout);
    }
    if let Some(c) = inline_credentials(&json, path, registry)? {
        return Ok(Some(c));
    }
    match helper_name(json.get("credsStore")) {
        Some(helper) => run_credential_helper(helper, path, registry, search_path, timeout),
        None => Ok(None),
    }
}

/// `docker-credential-<helper> get`, bounded in output and time.
fn run_credential_helper(
    helper: &str,
    config: &Path,
    registry: &str,
    search_path: &str,
    timeout: std::time::Duration,
) -> Result<Option<Credentials>> {
    use std::io::Write as _;
    let bad = |why: String| OciError::Unauthorized {
        registry: registry.to_string(),
        detail: format!("credential helper '{helper}' (named in Docker config {}): {why}", config.display()),
    };
    // The name comes from a file: it may only pick a program, never a path.
    if !helper.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) || helper.starts_with('.') {
        return Err(bad("the name may hold only letters, digits, '.', '_' and '-'".into()));
    }
    let program = format!("docker-credential-{helper}");
    let Some(exe) = std::env::split_paths(search_path).map(|d| d.join(&program)).find(|p| p.is_file()) else {
        return Err(bad(format!(
            "{program} is not on PATH; install it, or set PYRO_REGISTRY_USERNAME and PYRO_REGISTRY_PASSWORD"
        )));
    };
    let mut child = std::process::Command::new(&exe)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| bad(format!("cannot run {}: {e}", exe.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(registry.as_bytes());
    }
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.take(MAX_HELPER_OUTPUT + 1).read_to_end(&mut out);
        out
    });
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(bad(format!("no answer within {} s; it was stopped", timeout.as_secs())));
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    if out.len() as u64 > MAX_HELPER_OUTPUT {
        return Err(bad(format!("it answered more than {MAX_HELPER_OUTPUT} bytes")));
    }
    let text = String::from_utf8_lossy(&out);
    if !status.success() {
        // The helper protocol's way of saying "nothing stored for this registry".
        if text.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(bad(format!("it failed ({status}): {}", text.trim().chars().take(200).collect::<String>())));
    }
    #[derive(serde::Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let answer: HelperAnswer =
        serde_json::from_str(text.trim()).map_err(|e| bad(format!("its answer is not the helper JSON ({e})")))?;
    if answer.username == "<token>" {
        return Err(bad(
            "it holds an identity token, which pyro cannot use; set PYRO_REGISTRY_USERNAME and PYRO_REGISTRY_PASSWORD"
                .into(),
        ));
    }
    if answer.username.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: answer.username,
        password: answer.secret,
        source: format!("credential helper docker-credential-{helper}"),
    }))
}

/// The Docker config file as JSON; `None` when it does not exist.
fn read_docker_config(path: &Path, registry: &str) -> Result<Option<serde_json::Value>> {
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
    serde_json::from_slice(&text).map(Some).map_err(|e| OciError::Unauthorized {
        registry: registry.to_string(),
        detail: format!("Docker config {}: not JSON: {e}", path.display()),
    })
}

/// The `auths` entry for `registry`: `auth` (base64 of `user:password`) or `username` +
/// `password`.
fn inline_credentials(json: &serde_json::Value, path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let bad = |why: String| OciError::Unauthorized {
        registry: registry.to_string(),
        detail: format!("Docker config {}: {why}", path.display()),
    };
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

    /// A `docker-credential-<name>` script in `dir` running `body` (sh).
    fn helper(dir: &Path, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        let p = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn credential_helpers() {
        let d = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        let path = bin.path().to_str().unwrap();
        let t = std::time::Duration::from_secs(10);
        let answer = r#"read -r reg; printf '{"ServerURL":"%s","Username":"u-%s","Secret":"s"}' "$reg" "$0""#;
        helper(bin.path(), "store", answer);
        helper(bin.path(), "per", answer);
        helper(bin.path(), "none", "echo 'credentials not found in native keychain'; exit 1");
        helper(bin.path(), "broken", "echo 'dbus is down'; exit 3");
        helper(bin.path(), "token", r#"printf '{"Username":"<token>","Secret":"refresh"}'"#);
        helper(bin.path(), "flood", "head -c 200000 /dev/zero");
        helper(bin.path(), "slow", "sleep 30");
        let cfg = |text: &str| write(d.path(), text);
        let get = |p: &Path, reg: &str, timeout| docker_config_credentials_with_helpers(p, reg, path, timeout);

        // credHelpers for this registry wins; then the inline entry; then credsStore.
        let p = cfg(
            r#"{"credsStore":"store","credHelpers":{"a.io":"per"},"auths":{"b.io":{"username":"x","password":"y"}}}"#,
        );
        let c = get(&p, "a.io", t).unwrap().unwrap();
        assert!(c.username.starts_with("u-") && c.username.ends_with("docker-credential-per"), "{}", c.username);
        assert_eq!(c.source, "credential helper docker-credential-per");
        assert_eq!(get(&p, "b.io", t).unwrap().unwrap().username, "x");
        let c = get(&p, "c.io", t).unwrap().unwrap();
        assert!(c.username.ends_with("docker-credential-store"));
        // Without helpers (the plain reader), only inline entries count.
        assert!(docker_config_credentials(&p, "c.io").unwrap().is_none());

        // "not found" is anonymous; every other failure is a specific error.
        assert!(get(&cfg(r#"{"credsStore":"none"}"#), "a.io", t).unwrap().is_none());
        let err = |text: &str, timeout| get(&cfg(text), "a.io", timeout).unwrap_err().to_string();
        assert!(err(r#"{"credsStore":"broken"}"#, t).contains("dbus is down"));
        assert!(err(r#"{"credsStore":"token"}"#, t).contains("identity token"));
        assert!(err(r#"{"credsStore":"flood"}"#, t).contains("more than 65536 bytes"));
        assert!(err(r#"{"credsStore":"missing"}"#, t).contains("docker-credential-missing is not on PATH"));
        assert!(err(r#"{"credsStore":"../../bin/sh"}"#, t).contains("only letters"));
        let started = std::time::Instant::now();
        assert!(err(r#"{"credsStore":"slow"}"#, std::time::Duration::from_millis(300)).contains("no answer within"));
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "the slow helper was not stopped");
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
