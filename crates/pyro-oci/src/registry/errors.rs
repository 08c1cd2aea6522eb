//! Turning HTTP and client failures into [`OciError`] variants that say what to do.

use super::Registry;
use crate::OciError;
use oci_client::errors::{OciDistributionError, OciErrorCode};

/// What was being done when a request failed.
pub(super) struct Ctx<'a> {
    pub reg: &'a Registry,
    pub repository: &'a str,
    /// `pull` or `push`.
    pub operation: &'static str,
    /// e.g. `manifest r/x:1` or `blob sha256:...`.
    pub what: String,
}

impl Ctx<'_> {
    pub fn unauthorized(&self, extra: &str) -> OciError {
        let registry = &self.reg.registry;
        let detail = match &self.reg.auth_source {
            Some(src) => format!(
                "the registry rejected the credentials from {src} for {} of {}; check them \
                 (PYRO_REGISTRY_USERNAME/PYRO_REGISTRY_PASSWORD, or `docker login {registry}`){extra}",
                self.operation, self.repository
            ),
            None => format!(
                "no credentials were found for {registry}: set PYRO_REGISTRY_USERNAME and \
                 PYRO_REGISTRY_PASSWORD, or run `docker login {registry}`{extra}"
            ),
        };
        OciError::Unauthorized { registry: registry.clone(), detail }
    }

    pub fn forbidden(&self) -> OciError {
        OciError::Forbidden {
            registry: self.reg.registry.clone(),
            repository: self.repository.to_string(),
            operation: self.operation.to_string(),
        }
    }

    pub fn not_found(&self) -> OciError {
        OciError::NotFound { registry: self.reg.registry.clone(), what: self.what.clone() }
    }

    pub fn unreachable(&self, detail: String) -> OciError {
        let hint = if self.reg.scheme == "https" {
            " (check the host, port and network; a registry that speaks plain HTTP must be listed in PYRO_REGISTRY_INSECURE)"
        } else {
            " (check the host, port and network, and that the registry is running)"
        };
        OciError::Unreachable { registry: self.reg.registry.clone(), detail: format!("{detail}{hint}") }
    }

    /// An HTTP status that is not success.
    pub fn status(&self, code: u16, body: &str) -> OciError {
        match code {
            401 => self.unauthorized(""),
            403 => self.forbidden(),
            404 => self.not_found(),
            429 => OciError::Protocol(format!(
                "registry {} is rate limiting (HTTP 429) {} of {}: try again later",
                self.reg.registry, self.operation, self.what
            )),
            _ => OciError::Protocol(format!(
                "registry {} answered HTTP {code} to {} of {}: {}",
                self.reg.registry,
                self.operation,
                self.what,
                body.chars().take(300).collect::<String>()
            )),
        }
    }

    pub fn reqwest(&self, e: &reqwest::Error) -> OciError {
        if let Some(s) = e.status() {
            return self.status(s.as_u16(), "");
        }
        // Connection refused, DNS, TLS, timeouts and connections cut mid-body: the network.
        self.unreachable(chain(e))
    }

    /// An error of a body stream (oci-client wraps the transport error in an io::Error).
    pub fn stream(&self, e: std::io::Error) -> OciError {
        if let Some(inner) = e.get_ref() {
            if let Some(r) = inner.downcast_ref::<reqwest::Error>() {
                return self.reqwest(r);
            }
        }
        self.unreachable(chain(&e))
    }

    pub fn client(&self, e: OciDistributionError) -> OciError {
        match e {
            OciDistributionError::RequestError(r) => self.reqwest(&r),
            OciDistributionError::UnauthorizedError { .. } => self.unauthorized(""),
            OciDistributionError::AuthenticationFailure(reason) => {
                self.unauthorized(&format!(" (token service: {})", reason.chars().take(200).collect::<String>()))
            }
            OciDistributionError::ServerError { code, message, .. } => self.status(code, &message),
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.contains(&&OciErrorCode::Unauthorized) {
                    self.unauthorized("")
                } else if codes.contains(&&OciErrorCode::Denied) {
                    self.forbidden()
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    self.not_found()
                } else if codes.contains(&&OciErrorCode::Toomanyrequests) {
                    self.status(429, "")
                } else {
                    OciError::Protocol(format!(
                        "registry {} refused {} of {}: {envelope}",
                        self.reg.registry, self.operation, self.what
                    ))
                }
            }
            OciDistributionError::IoError(e) => self.stream(e),
            other => OciError::Protocol(format!(
                "registry {} during {} of {}: {other}",
                self.reg.registry, self.operation, self.what
            )),
        }
    }
}

/// An error and its causes on one line (reqwest's own text leaves out "connection refused").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
