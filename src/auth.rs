//! Who may send and who may read: bearer tokens with scopes, checked by one
//! layer over every TCP listener's router (HTTP and gRPC alike).
//!
//! `--auth-tokens-file` names a TOML file of `[[tokens]]` (see [`Tokens`]).
//! A request presents a token as `Authorization: Bearer <token>` (HTTP
//! header or gRPC metadata), as HTTP Basic with the token as the password
//! and any user name, or once through Flight SQL's `Handshake` (Basic in,
//! `authorization: Bearer <token>` out, which the client then sends on every
//! call). Only SHA-256 hashes of the tokens are held, and the presented
//! token's hash is compared with every entry in constant time.
//!
//! What a request needs is decided by [`required_scope`] from the listener,
//! method and path alone: `ingest` for whatever takes spans, `query` for
//! every read API, the UI and Flight SQL, `admin` for `/metrics` and
//! `/api/v1/storage`; `/health` and `/ready` need nothing. No token or an
//! unknown one is 401 (`WWW-Authenticate: Bearer` and `Basic`) or gRPC
//! UNAUTHENTICATED, a token without the scope 403 or PERMISSION_DENIED,
//! each with a reason. Logs name a token by its `name`, never the token.
//!
//! An accepted request carries its [`Identity`] as a request extension
//! (tonic hands HTTP extensions on to `tonic::Request::extensions`), which
//! is where tenant-aware handlers will read the token's tenants from.
//!
//! The file is read again when its content changes (polled every second)
//! and on SIGHUP; a file that does not parse keeps the tokens in force and
//! logs why.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::watch;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Send spans (OTLP, Zipkin and Jaeger receivers).
    Ingest,
    /// Read: every query API, SQL, Flight SQL, the UI.
    Query,
    /// Operate: `/metrics`, `/api/v1/storage`.
    Admin,
}

impl Scope {
    const ALL: [Scope; 3] = [Scope::Ingest, Scope::Query, Scope::Admin];

    fn name(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Scopes(u8);

impl Scopes {
    pub(crate) fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The names of the scopes held, in `Scope::ALL` order.
    pub(crate) fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .iter()
            .filter(|s| self.contains(**s))
            .map(|s| s.name())
            .collect()
    }

    fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

/// Who made an accepted request: a request extension on every request the
/// auth layer let through.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// The token's name from the file.
    pub(crate) name: Arc<str>,
    /// The tenants the token may act for (the first is its default).
    pub(crate) tenants: Arc<[String]>,
    pub(crate) scopes: Scopes,
}

/// The tokens file: `[[tokens]]` entries.
///
/// ```toml
/// [[tokens]]
/// name = "checkout-exporter"   # in logs, never the token
/// token_sha256 = "5e88…"       # hex SHA-256 of the token; or token = "…"
/// tenant = "shop"              # or tenants = ["shop", "web"]; default "default"
/// scopes = ["ingest"]          # of ingest, query, admin
/// ```
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    hash: [u8; 32],
    identity: Identity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    #[serde(default)]
    tokens: Vec<EntryText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryText {
    name: String,
    token: Option<String>,
    token_sha256: Option<String>,
    tenant: Option<String>,
    tenants: Option<Vec<String>>,
    scopes: Vec<String>,
}

/// The tenant of a token that names none.
const DEFAULT_TENANT: &str = crate::config::DEFAULT_TENANT;

impl Tokens {
    /// Parses and checks a tokens file's text; every error names the entry.
    pub(crate) fn parse(text: &str) -> anyhow::Result<Tokens> {
        let file: FileText = toml::from_str(text)?;
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut entries = Vec::with_capacity(file.tokens.len());
        for (i, e) in file.tokens.into_iter().enumerate() {
            let at = format!("token #{} ({:?})", i + 1, e.name);
            if e.name.trim().is_empty() {
                bail!("token #{}: name is empty", i + 1);
            }
            if !names.insert(e.name.clone()) {
                bail!("{at}: the name is used twice; names identify tokens in logs");
            }
            let hash = match (e.token, e.token_sha256) {
                (Some(_), Some(_)) => bail!("{at}: give token or token_sha256, not both"),
                (None, None) => bail!("{at}: neither token nor token_sha256 is given"),
                (Some(token), None) => {
                    if token.is_empty() {
                        bail!("{at}: token is empty");
                    }
                    sha256(&token)
                }
                (None, Some(hex_text)) => parse_sha256(&hex_text)
                    .with_context(|| format!("{at}: invalid token_sha256"))?,
            };
            if !hashes.insert(hash) {
                bail!("{at}: the same token is listed twice");
            }
            let tenants = match (e.tenant, e.tenants) {
                (Some(_), Some(_)) => bail!("{at}: give tenant or tenants, not both"),
                (Some(t), None) => vec![t],
                (None, Some(ts)) if ts.is_empty() => bail!("{at}: tenants is empty"),
                (None, Some(ts)) => ts,
                (None, None) => vec![DEFAULT_TENANT.to_string()],
            };
            for t in &tenants {
                check_tenant(t).with_context(|| format!("{at}: invalid tenant {t:?}"))?;
            }
            if e.scopes.is_empty() {
                bail!("{at}: no scopes; give at least one of ingest, query, admin");
            }
            let mut scopes = Scopes::default();
            for s in &e.scopes {
                let scope = Scope::ALL
                    .into_iter()
                    .find(|k| k.name() == s)
                    .with_context(|| {
                        format!("{at}: unknown scope {s:?}; scopes are ingest, query, admin")
                    })?;
                scopes.insert(scope);
            }
            entries.push(Entry {
                hash,
                identity: Identity {
                    name: e.name.into(),
                    tenants: tenants.into(),
                    scopes,
                },
            });
        }
        Ok(Tokens { entries })
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry whose token is `token`. Every entry's hash is compared,
    /// each in constant time, so the time taken says nothing about how
    /// close a guess came.
    fn find(&self, token: &str) -> Option<&Identity> {
        let hash = sha256(token);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(&entry.identity);
            }
        }
        found
    }
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_sha256(text: &str) -> anyhow::Result<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        bail!(
            "expected 64 hex digits (a SHA-256, e.g. from `printf %s TOKEN | sha256sum`), got {}",
            text.len()
        );
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).context("not hexadecimal")?;
    Ok(out)
}

/// Tenant ids as Tempo takes them: at most 150 bytes of
/// `[A-Za-z0-9!-_.*'()]`, and neither `.` nor `..` (the id becomes a
/// storage path).
pub(crate) fn check_tenant(tenant: &str) -> anyhow::Result<()> {
    if tenant.is_empty() {
        bail!("empty");
    }
    if tenant.len() > 150 {
        bail!("longer than 150 bytes");
    }
    if tenant == "." || tenant == ".." {
        bail!("`.` and `..` are not tenant ids");
    }
    if let Some(c) = tenant
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c)))
    {
        bail!("{c:?} is not allowed; use letters, digits and !-_.*'()");
    }
    Ok(())
}

/// The TCP listeners, for [`required_scope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    OtlpGrpc,
    OtlpHttp,
    /// Query API, UI, Jaeger/Tempo/Zipkin query APIs, health, metrics.
    Http,
    /// Zipkin ingest and its query API.
    Zipkin,
    JaegerHttp,
    FlightSql,
    /// Jaeger remote sampling (5778): SDKs poll it without a token.
    JaegerSampling,
}

/// The scope a request needs, or `None` when it is open to all.
pub(crate) fn required_scope(listener: Listener, method: &Method, path: &str) -> Option<Scope> {
    match listener {
        Listener::OtlpGrpc | Listener::OtlpHttp | Listener::JaegerHttp => Some(Scope::Ingest),
        // Strategies are not data, and the SDKs that poll send no token.
        Listener::JaegerSampling => None,
        Listener::FlightSql => Some(Scope::Query),
        Listener::Zipkin => {
            if method == Method::POST && matches!(path, "/api/v2/spans" | "/api/v1/spans") {
                Some(Scope::Ingest)
            } else {
                Some(Scope::Query)
            }
        }
        Listener::Http => match path {
            "/health" | "/ready" => None,
            // The web UI's page and files: the same code for everyone,
            // no data; it signs in and sends the token with its API calls.
            "/" | "/search" | "/services" | "/map" | "/sql" | "/compare" => None,
            p if one_segment_under(p, "/ui/") || one_segment_under(p, "/trace/") => None,
            "/metrics" | "/api/v1/storage" => Some(Scope::Admin),
            _ => Some(Scope::Query),
        },
    }
}

/// Whether `path` is `prefix` and one non-empty segment (`/ui/app.js`).
fn one_segment_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// Why a request's `Authorization` gives no usable token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoToken {
    Missing,
    Malformed(&'static str),
}

/// The token a request presents: a Bearer token, or the password of HTTP
/// Basic credentials (any user name).
pub(crate) fn presented_token(headers: &HeaderMap) -> Result<String, NoToken> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(NoToken::Missing)?
        .to_str()
        .map_err(|_| NoToken::Malformed("the Authorization header is not ASCII"))?
        .trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(NoToken::Malformed("the Bearer token is empty"));
        }
        Ok(rest.to_string())
    } else if scheme.eq_ignore_ascii_case("basic") {
        // Padded or not: Go's Flight client sends it unpadded.
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let bytes = engine
            .decode(rest)
            .map_err(|_| NoToken::Malformed("the Basic credentials are not base64"))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| NoToken::Malformed("the Basic credentials are not UTF-8"))?;
        let (_user, password) = text.split_once(':').ok_or(NoToken::Malformed(
            "the Basic credentials have no `user:password` colon",
        ))?;
        if password.is_empty() {
            return Err(NoToken::Malformed(
                "the Basic password is empty; send the token as the password",
            ));
        }
        Ok(password.to_string())
    } else {
        Err(NoToken::Malformed(
            "the Authorization scheme is neither Bearer nor Basic",
        ))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct Accepted {
    /// The token's name from the tokens file (never the token).
    token: String,
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct Refused {
    /// `no_token`, `malformed`, `unknown_token` or `scope`.
    reason: &'static str,
}

/// Requests let through per token and scope, and refusals per reason.
#[derive(Debug, Default)]
pub(crate) struct AuthMetrics {
    accepted: Family<Accepted, Counter>,
    refused: Family<Refused, Counter>,
}

impl AuthMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "tracelake_auth_requests",
            "Requests let through, by the token's name and the scope they needed",
            self.accepted.clone(),
        );
        registry.register(
            "tracelake_auth_refusals",
            "Requests refused for want of a token (no_token, malformed, unknown_token) or of a scope",
            self.refused.clone(),
        );
    }

    fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&Refused { reason }).inc();
    }
}

/// The check for one listener: its tokens (kept current by
/// [`watch_tokens`]), which listener it guards, and the counters.
#[derive(Clone)]
pub(crate) struct Guard {
    tokens: watch::Receiver<Arc<Tokens>>,
    listener: Listener,
    metrics: Arc<AuthMetrics>,
}

impl Guard {
    pub(crate) fn new(
        tokens: watch::Receiver<Arc<Tokens>>,
        listener: Listener,
        metrics: Arc<AuthMetrics>,
    ) -> Guard {
        Guard {
            tokens,
            listener,
            metrics,
        }
    }

    /// `router` answering only requests with a token that has the scope.
    pub(crate) fn protect(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self, check))
    }
}

/// The Flight SQL handshake's gRPC path.
const FLIGHT_HANDSHAKE: &str = "/arrow.flight.protocol.FlightService/Handshake";

async fn check(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let Some(scope) = required_scope(guard.listener, &method, &path) else {
        return next.run(request).await;
    };
    let grpc = is_grpc(request.headers());
    // The web UI's own calls: a Basic challenge would make the browser
    // show its own password prompt over the UI's sign-in form.
    let basic = !request.headers().contains_key("x-tracelake-ui");
    let refuse = |grpc, status, reason| refuse_with(grpc, status, reason, basic);
    let token = match presented_token(request.headers()) {
        Ok(token) => token,
        Err(NoToken::Missing) => {
            guard.metrics.refuse("no_token");
            return refuse(
                grpc,
                StatusCode::UNAUTHORIZED,
                format!(
                    "no token: {method} {path} needs a token with the {scope} scope, sent as \
                     `Authorization: Bearer <token>` or as the password of HTTP Basic credentials"
                ),
            );
        }
        Err(NoToken::Malformed(why)) => {
            guard.metrics.refuse("malformed");
            return refuse(
                grpc,
                StatusCode::UNAUTHORIZED,
                format!("{why}: send `Authorization: Bearer <token>` or HTTP Basic credentials"),
            );
        }
    };
    let identity = guard.tokens.borrow().find(&token).cloned();
    let Some(identity) = identity else {
        tracing::debug!(%method, %path, "refused an unknown token");
        guard.metrics.refuse("unknown_token");
        return refuse(
            grpc,
            StatusCode::UNAUTHORIZED,
            "unknown token: it is not in the tokens file (or was removed from it)".to_string(),
        );
    };
    if !identity.scopes.contains(scope) {
        tracing::info!(token = %identity.name, %method, %path, "refused: no {scope} scope");
        guard.metrics.refuse("scope");
        return refuse(
            grpc,
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} lacks the {scope} scope that {method} {path} needs (it has: {})",
                identity.name, identity.scopes
            ),
        );
    }
    guard
        .metrics
        .accepted
        .get_or_create(&Accepted {
            token: identity.name.to_string(),
            scope: scope.name(),
        })
        .inc();
    let handshake = guard.listener == Listener::FlightSql && path == FLIGHT_HANDSHAKE;
    request.extensions_mut().insert(identity);
    let mut response = next.run(request).await;
    if handshake {
        // Basic in, bearer out: the client sends this on every later call.
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            response.headers_mut().insert(header::AUTHORIZATION, value);
        }
    }
    response
}

pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A refusal: gRPC status (in a trailers-only answer) for gRPC requests,
/// otherwise the HTTP status with the reason as text.
pub(crate) fn refuse(grpc: bool, status: StatusCode, reason: String) -> Response {
    refuse_with(grpc, status, reason, true)
}

/// [`refuse`]; a 401 challenges with Bearer, and with Basic if `basic`.
fn refuse_with(grpc: bool, status: StatusCode, reason: String, basic: bool) -> Response {
    if grpc {
        let status = match status {
            StatusCode::FORBIDDEN => tonic::Status::permission_denied(reason),
            StatusCode::UNAUTHORIZED => tonic::Status::unauthenticated(reason),
            StatusCode::BAD_REQUEST => tonic::Status::invalid_argument(reason),
            StatusCode::TOO_MANY_REQUESTS => tonic::Status::resource_exhausted(reason),
            _ => tonic::Status::unavailable(reason),
        };
        return status.into_http::<Body>();
    }
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        reason + "\n",
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        let headers = response.headers_mut();
        headers.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tracelake\""),
        );
        if basic {
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tracelake\", charset=\"UTF-8\""),
            );
        }
    }
    response
}

/// The tokens of the file at `path`, loaded now (an error stops the start)
/// and kept current: read again when its content changes (checked every
/// `every`) and on SIGHUP. A file that cannot be read or does not parse
/// then leaves the tokens in force; the error is logged once per content.
pub(crate) fn watch_tokens(
    path: PathBuf,
    every: Duration,
) -> anyhow::Result<watch::Receiver<Arc<Tokens>>> {
    let file = path.clone();
    crate::reload::watch_files("tokens", vec![path], every, move |contents| {
        let tokens = std::str::from_utf8(&contents[0])
            .map_err(anyhow::Error::from)
            .and_then(Tokens::parse)
            .with_context(|| format!("invalid tokens file {}", file.display()))?;
        tracing::info!(tokens = tokens.len(), "tokens file read");
        Ok(tokens)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str, padded: bool) -> String {
        let b64 = if padded {
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        } else {
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(user_pass)
        };
        format!("Basic {b64}")
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        h
    }

    const FILE: &str = r#"
        [[tokens]]
        name = "exporter"
        token = "s3cret-ingest"
        tenant = "shop"
        scopes = ["ingest"]

        [[tokens]]
        name = "grafana"
        # sha256("password")
        token_sha256 = "5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8"
        tenants = ["shop", "web"]
        scopes = ["query", "admin"]
    "#;

    #[test]
    fn a_valid_file_parses_into_names_tenants_and_scopes() {
        let tokens = Tokens::parse(FILE).unwrap();
        assert_eq!(tokens.len(), 2);
        let exporter = tokens.find("s3cret-ingest").unwrap();
        assert_eq!(&*exporter.name, "exporter");
        assert_eq!(&*exporter.tenants, ["shop".to_string()]);
        assert!(exporter.scopes.contains(Scope::Ingest));
        assert!(!exporter.scopes.contains(Scope::Query));
        let grafana = tokens.find("password").unwrap();
        assert_eq!(&*grafana.name, "grafana");
        assert_eq!(&*grafana.tenants, ["shop".to_string(), "web".to_string()]);
        assert_eq!(grafana.scopes.to_string(), "query, admin");
        assert!(tokens.find("passwore").is_none());
        assert!(tokens.find("").is_none());
        assert!(tokens.find("s3cret-ingest ").is_none());
        // No tenant: the default tenant.
        let t = Tokens::parse("[[tokens]]\nname='a'\ntoken='x'\nscopes=['query']").unwrap();
        assert_eq!(&*t.find("x").unwrap().tenants, ["default".to_string()]);
        // An empty file is no tokens (everything refused), not an error.
        assert_eq!(Tokens::parse("").unwrap().len(), 0);
    }

    #[test]
    fn invalid_files_are_refused_with_a_reason_naming_the_entry() {
        let entry = |body: &str| format!("[[tokens]]\nname = \"t1\"\n{body}\n");
        let cases = [
            (entry("token='x'\nscopes=['ingest', 'write']"), "unknown scope \"write\""),
            (entry("token='x'\ntoken_sha256='00'\nscopes=['query']"), "not both"),
            (entry("scopes=['query']"), "neither token nor token_sha256"),
            (entry("token_sha256='zz'\nscopes=['query']"), "64 hex digits"),
            (entry(&format!("token_sha256='{}'\nscopes=['query']", "g".repeat(64))), "not hexadecimal"),
            (entry("token='x'\nscopes=[]"), "no scopes"),
            (entry("token=''\nscopes=['query']"), "token is empty"),
            (entry("token='x'\ntenant='a'\ntenants=['b']\nscopes=['query']"), "tenant or tenants"),
            (entry("token='x'\ntenant='..'\nscopes=['query']"), "invalid tenant"),
            (entry("token='x'\ntenant='a/b'\nscopes=['query']"), "invalid tenant"),
            (entry("token='x'\nscope=['query']"), "unknown field"),
            (format!("{}{}", entry("token='x'\nscopes=['query']"), entry("token='y'\nscopes=['query']")), "used twice"),
            (
                "[[tokens]]\nname='a'\ntoken='x'\nscopes=['query']\n[[tokens]]\nname='b'\ntoken='x'\nscopes=['ingest']\n".to_string(),
                "listed twice",
            ),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", Tokens::parse(&text).unwrap_err());
            assert!(
                error.contains(expected),
                "{text}\n=> {error}\n(expected {expected:?})"
            );
        }
    }

    #[test]
    fn tenant_ids_follow_tempo() {
        for ok in ["shop", "a.b", "A-Z_0*9!'()", &"x".repeat(150)] {
            check_tenant(ok).unwrap();
        }
        for bad in ["", ".", "..", "a b", "a/b", "é", &"x".repeat(151)] {
            assert!(check_tenant(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bearer_and_basic_carry_the_token() {
        assert_eq!(presented_token(&headers("Bearer abc")).unwrap(), "abc");
        assert_eq!(presented_token(&headers("bearer  abc ")).unwrap(), "abc");
        // Basic: any user, the token is the password (which may hold ':').
        assert_eq!(
            presented_token(&headers(&basic("grafana:to:ken", true))).unwrap(),
            "to:ken"
        );
        assert_eq!(
            presented_token(&headers(&basic(":tok", true))).unwrap(),
            "tok"
        );
        // Unpadded base64, as Go's Flight client sends it.
        assert_eq!(
            presented_token(&headers(&basic("u:ab", false))).unwrap(),
            "ab"
        );
        assert_eq!(presented_token(&HeaderMap::new()), Err(NoToken::Missing));
        for bad in ["Bearer", "Bearer   ", "Basic !!!", "Token abc", "abc"] {
            assert!(
                matches!(presented_token(&headers(bad)), Err(NoToken::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            presented_token(&headers(&basic("user-only", true))),
            Err(NoToken::Malformed(m)) if m.contains("colon")
        ));
        assert!(matches!(
            presented_token(&headers(&basic("user:", true))),
            Err(NoToken::Malformed(m)) if m.contains("empty")
        ));
    }

    #[test]
    fn scopes_follow_listener_method_and_path() {
        use Listener::*;
        let get = Method::GET;
        let post = Method::POST;
        let cases: &[(Listener, &Method, &str, Option<Scope>)] = &[
            (
                OtlpGrpc,
                &post,
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                Some(Scope::Ingest),
            ),
            (OtlpHttp, &post, "/v1/traces", Some(Scope::Ingest)),
            (JaegerHttp, &post, "/api/traces", Some(Scope::Ingest)),
            (Zipkin, &post, "/api/v2/spans", Some(Scope::Ingest)),
            (Zipkin, &post, "/api/v1/spans", Some(Scope::Ingest)),
            (Zipkin, &get, "/api/v2/spans", Some(Scope::Query)),
            (Zipkin, &get, "/api/v2/services", Some(Scope::Query)),
            (Zipkin, &get, "/api/v2/trace/abc", Some(Scope::Query)),
            (FlightSql, &post, FLIGHT_HANDSHAKE, Some(Scope::Query)),
            (
                FlightSql,
                &post,
                "/arrow.flight.protocol.FlightService/DoGet",
                Some(Scope::Query),
            ),
            (Http, &get, "/health", None),
            (Http, &get, "/ready", None),
            (Http, &get, "/metrics", Some(Scope::Admin)),
            (Http, &get, "/api/v1/storage", Some(Scope::Admin)),
            (Http, &get, "/", None),
            (Http, &get, "/ui/app.js", None),
            (Http, &get, "/trace/abc", None),
            (Http, &get, "/trace/a/b", Some(Scope::Query)),
            (Http, &get, "/ui/", Some(Scope::Query)),
            (Http, &get, "/ui/x/y.js", Some(Scope::Query)),
            (Http, &get, "/api/v1/whoami", Some(Scope::Query)),
            (Http, &post, "/api/v1/sql", Some(Scope::Query)),
            (Http, &get, "/jaeger/api/services", Some(Scope::Query)),
            (Http, &get, "/tempo/api/search", Some(Scope::Query)),
            (Http, &get, "/zipkin/api/v2/services", Some(Scope::Query)),
            (Http, &post, "/zipkin/api/v2/spans", Some(Scope::Query)),
            (Http, &get, "/health/", Some(Scope::Query)),
            (Http, &get, "/metrics/x", Some(Scope::Query)),
        ];
        for (listener, method, path, expected) in cases {
            assert_eq!(
                required_scope(*listener, method, path),
                *expected,
                "{listener:?} {method} {path}"
            );
        }
    }

    #[test]
    fn the_hash_compare_is_over_the_whole_digest() {
        // Equal prefixes do not match: ct_eq compares all 32 bytes.
        let a = sha256("a");
        let mut b = a;
        b[31] ^= 1;
        assert!(!bool::from(a.ct_eq(&b)));
        assert!(bool::from(a.ct_eq(&a)));
        assert_eq!(
            hex::encode(sha256("password")),
            "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
        );
    }
}
