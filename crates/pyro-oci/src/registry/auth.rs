//! The `Authorization` a request to the registry carries, obtained with bounded reads.
//!
//! oci-client follows the registry's `WWW-Authenticate: Bearer` challenge itself, but reads
//! the token service's answer (and error bodies) whole: a hostile or broken token service
//! could send gigabytes into memory. pyro does the challenge and the token request here,
//! reading at most [`MAX_TOKEN_RESPONSE`] bytes, and hands oci-client (used for pushes) the
//! finished bearer token. The challenge is parsed by `http-auth`, the parser oci-client uses.

use super::errors::Ctx;
use super::Registry;
use crate::{OciError, Result};
use oci_client::secrets::RegistryAuth;

/// Largest token service answer read (a JSON object holding a token of a few KiB).
pub(super) const MAX_TOKEN_RESPONSE: u64 = 64 << 10;
/// Prefix of an error body kept for the message; the rest is never read.
pub(super) const MAX_ERROR_BODY: usize = 4096;

/// At most `limit` bytes of `resp`'s body; `Err(size)` with the size seen once more arrived
/// (Content-Length first, so an honest oversize answer is refused before any byte is read).
pub(super) async fn read_bounded(
    ctx: &Ctx<'_>,
    mut resp: reqwest::Response,
    limit: u64,
) -> Result<std::result::Result<Vec<u8>, u64>> {
    if let Some(len) = resp.content_length() {
        if len > limit {
            return Ok(Err(len));
        }
    }
    let mut bytes = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|e| ctx.reqwest(&e))? {
        if (bytes.len() + c.len()) as u64 > limit {
            return Ok(Err((bytes.len() + c.len()) as u64));
        }
        bytes.extend_from_slice(&c);
    }
    Ok(Ok(bytes))
}

/// The first [`MAX_ERROR_BODY`] bytes of an error answer, for the message only; a transport
/// error midway just ends it.
pub(super) async fn error_body(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(c)) = resp.chunk().await {
        let room = MAX_ERROR_BODY - body.len();
        body.extend_from_slice(&c[..c.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// What the registry's `/v2/` answer asks for.
enum Challenge {
    None,
    Basic,
    Bearer { realm: String, service: Option<String> },
}

fn parse_challenge(header: Option<&reqwest::header::HeaderValue>) -> Challenge {
    let Some(text) = header.and_then(|h| h.to_str().ok()) else { return Challenge::None };
    let mut basic = false;
    for c in http_auth::parser::ChallengeParser::new(text).flatten() {
        if c.scheme.eq_ignore_ascii_case("bearer") {
            let param =
                |name: &str| c.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_unescaped());
            if let Some(realm) = param("realm") {
                return Challenge::Bearer { realm, service: param("service") };
            }
        } else if c.scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    if basic {
        Challenge::Basic
    } else {
        Challenge::None
    }
}

impl Registry {
    /// The `Authorization` header for `ctx.operation` (`pull` or `push`) on
    /// `ctx.repository`, or `None` when the registry asks for none. Cached per repository and
    /// operation; [`forget_authorization`](Registry::forget_authorization) drops an expired one.
    pub(super) async fn authorization(&self, ctx: &Ctx<'_>) -> Result<Option<String>> {
        let key = (ctx.repository.to_string(), ctx.operation);
        if let Some(a) = self.authz_cache.lock().unwrap().get(&key) {
            return Ok(a.clone());
        }
        let a = self.negotiate(ctx).await?;
        self.authz_cache.lock().unwrap().insert(key, a.clone());
        Ok(a)
    }

    /// Drop the cached authorization of `ctx` (a bearer token the registry stopped taking).
    pub(super) fn forget_authorization(&self, ctx: &Ctx<'_>) {
        self.authz_cache.lock().unwrap().remove(&(ctx.repository.to_string(), ctx.operation));
    }

    /// The credentials for oci-client (which does the pushes): the bearer token obtained
    /// here, so oci-client never asks a token service itself.
    pub(super) async fn client_auth(&self, ctx: &Ctx<'_>) -> Result<RegistryAuth> {
        Ok(match self.authorization(ctx).await? {
            Some(a) if a.starts_with("Bearer ") => RegistryAuth::Bearer(a["Bearer ".len()..].to_string()),
            Some(_) => self.auth.clone(),
            None => RegistryAuth::Anonymous,
        })
    }

    fn basic_header(&self) -> Option<String> {
        match &self.auth {
            RegistryAuth::Basic(u, p) => {
                use base64::Engine as _;
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))))
            }
            _ => None,
        }
    }

    /// Ask `/v2/` what it wants, then follow a bearer challenge to the token service.
    async fn negotiate(&self, ctx: &Ctx<'_>) -> Result<Option<String>> {
        let url = format!("{}://{}/v2/", self.scheme, self.registry);
        let resp = self.http.get(&url).send().await.map_err(|e| ctx.reqwest(&e))?;
        let status = resp.status().as_u16();
        let challenge = parse_challenge(resp.headers().get(reqwest::header::WWW_AUTHENTICATE));
        // The body of /v2/ says nothing pyro needs: never read.
        drop(resp);
        match (status, challenge) {
            (200..=299, _) => Ok(self.basic_header()),
            (401, Challenge::Bearer { realm, service }) => self.bearer_token(ctx, &realm, service.as_deref()).await,
            (401, Challenge::Basic) => match self.basic_header() {
                Some(b) => Ok(Some(b)),
                None => Err(ctx.unauthorized("")),
            },
            (401, Challenge::None) => {
                Err(ctx.unauthorized(" (the registry sent no usable WWW-Authenticate challenge)"))
            }
            (code, _) => Err(ctx.status(code, "")),
        }
    }

    /// `GET realm?scope=repository:<repo>:pull[,push]&service=...` with the basic
    /// credentials if any; the answer is read up to [`MAX_TOKEN_RESPONSE`].
    async fn bearer_token(&self, ctx: &Ctx<'_>, realm: &str, service: Option<&str>) -> Result<Option<String>> {
        let realm_url = reqwest::Url::parse(realm).map_err(|e| {
            OciError::Protocol(format!("registry {} named a token service that is not a URL ({e})", self.registry))
        })?;
        // Credentials go to the token service: never in clear text unless the registry
        // itself is reached over plain HTTP (loopback or PYRO_REGISTRY_INSECURE).
        match realm_url.scheme() {
            "https" => {}
            "http" if self.scheme == "http" => {}
            other => {
                return Err(OciError::Protocol(format!(
                    "registry {} named a token service over '{other}' ({realm_url}); only https is used for an https registry",
                    self.registry
                )))
            }
        }
        let scope = match ctx.operation {
            "push" => format!("repository:{}:pull,push", ctx.repository),
            _ => format!("repository:{}:pull", ctx.repository),
        };
        let mut query = vec![("scope", scope.as_str())];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let mut req = self.http.get(realm_url).query(&query);
        if let Some(b) = self.basic_header() {
            req = req.header(reqwest::header::AUTHORIZATION, b);
        }
        let resp = req.send().await.map_err(|e| ctx.reqwest(&e))?;
        let status = resp.status().as_u16();
        if !(200..=299).contains(&status) {
            let body = error_body(resp).await;
            return Err(match status {
                401 | 403 => {
                    ctx.unauthorized(&format!(" (token service: {})", body.chars().take(200).collect::<String>()))
                }
                code => ctx.status(code, &body),
            });
        }
        let bytes = match read_bounded(ctx, resp, MAX_TOKEN_RESPONSE).await? {
            Ok(b) => b,
            Err(size) => {
                return Err(OciError::TooLarge {
                    what: format!("the token service's answer for {}", ctx.repository),
                    size,
                    limit: MAX_TOKEN_RESPONSE,
                })
            }
        };
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&bytes).map_err(|e| {
            OciError::Protocol(format!("registry {}: the token service's answer is not a token ({e})", self.registry))
        })?;
        let token = answer.token.or(answer.access_token).filter(|t| !t.is_empty()).ok_or_else(|| {
            OciError::Protocol(format!("registry {}: the token service answered without a token", self.registry))
        })?;
        // It becomes a header value: printable ASCII only.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(OciError::Protocol(format!(
                "registry {}: the token service sent a token with characters a header cannot carry",
                self.registry
            )));
        }
        Ok(Some(format!("Bearer {token}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Challenge {
        parse_challenge(Some(&reqwest::header::HeaderValue::from_str(s).unwrap()))
    }

    #[test]
    fn challenges() {
        match parse(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#)
        {
            Challenge::Bearer { realm, service } => {
                assert_eq!(realm, "https://auth.example/token");
                assert_eq!(service.as_deref(), Some("registry.example"));
            }
            _ => panic!("bearer expected"),
        }
        assert!(matches!(parse(r#"Basic realm="Registry Realm""#), Challenge::Basic));
        // A bearer challenge without a realm cannot be followed.
        assert!(matches!(parse(r#"Bearer service="x""#), Challenge::None));
        assert!(matches!(parse_challenge(None), Challenge::None));
        assert!(matches!(parse("garbage ,,, ="), Challenge::None));
    }
}
