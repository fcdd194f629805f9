//! The HTTP endpoint: one router, served on a Unix socket and on loopback TCP.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /v1/credentials` | the default role's credential |
//! | `GET /v1/credentials/{name}` | that role's credential; 404 if unknown |
//! | `GET /healthz` | 200 when every role holds a usable credential, else 503 |
//! | `GET /metrics` | Prometheus text (see [`crate::metrics`]) |
//!
//! Credentials are answered in the ECS shape (see [`crate::credential`]);
//! every error is `{"code": "...", "message": "..."}` as JSON, never a 200
//! with empty fields: 401/403 for a missing or wrong token, 404 for an
//! unknown path or role, 503 while no usable credential exists.
//!
//! Guards run before any credential is looked up, in this order. On both
//! listeners:
//!
//! - only GET and HEAD (405 with `Allow`);
//! - the request target is a canonical path: no absolute URI (proxy form),
//!   no percent-encoding, no empty, `.` or `..` segments (400), so no
//!   layer can read the path differently from the router;
//! - no body: no `Transfer-Encoding`, no `Content-Length` but 0 (400);
//! - no proxy headers (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `Via`:
//!   400);
//! - no browser headers (`Origin`, `Sec-Fetch-*`: 403).
//!
//! On TCP: exactly one `Host`, `127.0.0.1`, `[::1]` or `localhost` in any
//! case, with or without the listening port in digits (403 otherwise,
//! against DNS rebinding; a trailing dot or another spelling of loopback is
//! refused too), and credential requests must carry the token in exactly
//! one `Authorization` header, compared in constant time: the listener's
//! token for any role, or a role's own token for that role alone.
//!
//! On the Unix socket: the peer's uid or gid (from `SO_PEERCRED`) must be
//! in the listener's allowlist when one is set, and in the role's when it
//! has one. The peer's pid is logged, never trusted. `/healthz` and
//! `/metrics` need no token: they hold no secrets.
//!
//! Every credential request leaves one line on the `assumed::audit` target.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::clock::StsClock;
use crate::config::{ListenSettings, RoleName};
use crate::credential::rfc3339;
use crate::metrics::{CountRequestsLayer, Metrics};
use crate::session::{FIRST_CREDENTIAL_WAIT, MfaSession, RoleSlot, Store};
use crate::totp::CurrentLedger;

pub mod listener;
#[cfg(test)]
mod tests;

const CREDENTIALS_PATH: &str = "/v1/credentials";

/// Everything a request handler reads.
pub struct ServerState {
    pub store: Arc<Store>,
    pub clock: Arc<StsClock>,
    /// The MFA device's ledger, for health output.
    pub ledger: CurrentLedger,
    /// The token that grants every role over TCP.
    pub token: SecretString,
    pub listen: ListenSettings,
    pub metrics: Arc<Metrics>,
}

/// Who is asking: set by the listener on every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Tcp {
        local_port: u16,
    },
    Unix {
        uid: u32,
        gid: u32,
        pid: Option<i32>,
    },
}

/// The router both listeners serve.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/v1/credentials", get(default_credentials))
        .route("/v1/credentials/{name}", get(named_credentials))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such path; credentials are at /v1/credentials/NAME",
            )
        })
        .layer(GuardLayer)
        // Outside the guards, so refusals are counted too.
        .layer(CountRequestsLayer::new(state.metrics.clone()))
        .with_state(state)
}

/// A JSON error in the shape the ECS agent uses.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

/// The request guards that apply to every path, as a tower layer: a
/// request that passes goes to the route untouched, one that does not is
/// answered at once. A refused credential request is audited like any
/// other. (Written out rather than with `axum::middleware::from_fn`, which
/// boxes a copy of the route and a future on every request.)
#[derive(Clone, Copy, Debug)]
struct GuardLayer;

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded { inner }
    }
}

#[derive(Clone, Debug)]
struct Guarded<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Guarded<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = GuardedFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match guard(&request) {
            Some(refusal) => GuardedFuture::Refused {
                refusal: Some(refusal),
            },
            None => GuardedFuture::Passed {
                inner: self.inner.call(request),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The route's answer, or the guard's refusal.
    #[project = GuardedProjection]
    enum GuardedFuture<F> {
        Passed { #[pin] inner: F },
        Refused { refusal: Option<Response> },
    }
}

impl<F, E> std::future::Future for GuardedFuture<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            GuardedProjection::Passed { inner } => inner.poll(cx),
            GuardedProjection::Refused { refusal } => {
                std::task::Poll::Ready(Ok(refusal.take().expect("polled after completion")))
            }
        }
    }
}

/// The refusal for `request`, audited if it asked for a credential; `None`
/// when every guard lets it pass.
fn guard(request: &Request) -> Option<Response> {
    let refusal = refuse(request)?;
    let path = request.uri().path();
    Some(
        match (
            request.extensions().get::<Peer>(),
            path.strip_prefix(CREDENTIALS_PATH),
        ) {
            (Some(peer), Some(rest)) => {
                let role = rest.strip_prefix('/').filter(|name| !name.is_empty());
                audited(peer, role.unwrap_or("-"), refusal)
            }
            _ => refusal,
        },
    )
}

fn refuse(request: &Request) -> Option<Response> {
    let Some(peer) = request.extensions().get::<Peer>() else {
        return Some(error(StatusCode::FORBIDDEN, "Forbidden", "unknown peer"));
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "only GET and HEAD are served",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(response);
    }
    let uri = request.uri();
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "AbsoluteFormRequest",
            "requests addressed to a proxy (an absolute URI) are refused; send the path alone",
        ));
    }
    if !path_is_canonical(uri.path()) {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "NonCanonicalPath",
            "the path must have no percent-encoding, empty, '.' or '..' segments",
        ));
    }
    let headers = request.headers();
    if has_body(headers) {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "UnexpectedBody",
            "GET and HEAD requests must have no body (no Content-Length or Transfer-Encoding)",
        ));
    }
    if headers.keys().any(|name| is_proxy_header(name.as_str())) {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "ProxiedRequest",
            "requests relayed by a proxy are refused; ask from this host directly",
        ));
    }
    if headers.keys().any(|name| is_browser_header(name.as_str())) {
        return Some(error(
            StatusCode::FORBIDDEN,
            "BrowserRequest",
            "requests from web pages are refused",
        ));
    }
    match peer {
        Peer::Tcp { local_port } if !host_is_loopback(headers, *local_port) => Some(error(
            StatusCode::FORBIDDEN,
            "BadHost",
            "the Host header must be 127.0.0.1, [::1] or localhost",
        )),
        _ => None,
    }
}

/// Headers a proxy adds when it relays a request. `X-Forwarded-For`,
/// `Forwarded` and `Via` are the standard ones; `X-Real-IP` and the other
/// `X-Forwarded-*` come from proxies configured without them.
fn is_proxy_header(name: &str) -> bool {
    matches!(name, "forwarded" | "via" | "x-real-ip") || name.starts_with("x-forwarded-")
}

/// Headers only browsers send: `Origin` on cross-origin and CORS requests,
/// `Sec-Fetch-*` on every request, even an `<img>` load that has no `Origin`.
fn is_browser_header(name: &str) -> bool {
    name == "origin" || name.starts_with("sec-fetch-")
}

/// SDKs send bare GETs; a body on one only serves to confuse a parser.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|length| length.as_bytes() != b"0")
}

/// No served path needs percent-encoding, and a path that would change
/// under normalisation (`//`, `/./`, `/../`) is one that different layers
/// could read differently, so such paths are refused before routing. A
/// trailing slash changes nothing; such a path is simply not found.
fn path_is_canonical(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    !path.contains('%')
        && (rest.is_empty()
            || rest
                .split('/')
                .all(|segment| !segment.is_empty() && segment != "." && segment != ".."))
}

/// Whether `Host` names this host on the listening port (or no port).
///
/// Exactly `127.0.0.1`, `[::1]` or `localhost` (any case), optionally
/// followed by `:` and the port in decimal digits. Everything else is
/// refused, including a trailing dot, userinfo, other spellings of the
/// loopback addresses and a second `Host` header.
fn host_is_loopback(headers: &HeaderMap, port: u16) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return false;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let (name, host_port) = match host.rsplit_once(':') {
        Some((name, port_text))
            if !name.ends_with(':') && (name.starts_with('[') || !name.contains(':')) =>
        {
            (name, Some(port_text))
        }
        _ => (host, None),
    };
    let name_ok = matches!(
        name.to_ascii_lowercase().as_str(),
        "127.0.0.1" | "[::1]" | "localhost"
    );
    let port_ok = host_port.is_none_or(|text| {
        !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && text.parse::<u16>() == Ok(port)
    });
    name_ok && port_ok
}

// The request comes last and whole, so its headers are borrowed rather
// than copied as a `HeaderMap` extractor would.
async fn default_credentials(
    State(state): State<Arc<ServerState>>,
    Extension(peer): Extension<Peer>,
    request: Request,
) -> Response {
    let default = state.store.table().default.clone();
    let Some(name) = default else {
        let table = state.store.table();
        let names: Vec<&str> = table.roles.keys().map(RoleName::as_str).collect();
        let message = format!(
            "no default role; ask /v1/credentials/NAME for one of: {}",
            names.join(", ")
        );
        return audited(
            &peer,
            "-",
            error(StatusCode::NOT_FOUND, "NoDefaultRole", &message),
        );
    };
    credentials(&state, &peer, request.headers(), name.as_str()).await
}

async fn named_credentials(
    State(state): State<Arc<ServerState>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    credentials(&state, &peer, request.headers(), &name).await
}

async fn credentials(
    state: &ServerState,
    peer: &Peer,
    headers: &HeaderMap,
    name: &str,
) -> Response {
    let response = credentials_response(state, peer, headers, name).await;
    audited(peer, name, response)
}

async fn credentials_response(
    state: &ServerState,
    peer: &Peer,
    headers: &HeaderMap,
    name: &str,
) -> Response {
    let slot = RoleName::parse(name).and_then(|name| state.store.table().roles.get(&name).cloned());
    let Some(slot) = slot else {
        return error(
            StatusCode::NOT_FOUND,
            "UnknownRole",
            &format!("no role named {:?} is served here", truncate(name)),
        );
    };
    if let Some(refusal) = authorize(state, peer, headers, &slot) {
        return refusal;
    }
    let clock = &state.clock;
    match slot
        .usable_or_wait(|| clock.host_now(), FIRST_CREDENTIAL_WAIT)
        .await
    {
        Some(credential) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            credential.body(),
        )
            .into_response(),
        None => {
            let reason = slot
                .status()
                .last_error
                .map(|failure| format!("{}; {}", failure.message, failure.class.hint()))
                .unwrap_or_else(|| "the first session is still being fetched".to_owned());
            let message = format!("role {name} has no usable credential: {reason}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "CredentialsUnavailable",
                &message,
            )
        }
    }
}

/// Checks the token (TCP) or the peer's uid and gid (Unix) for a role.
fn authorize(
    state: &ServerState,
    peer: &Peer,
    headers: &HeaderMap,
    slot: &RoleSlot,
) -> Option<Response> {
    match peer {
        Peer::Tcp { .. } => {
            let mut presented = headers.get_all(header::AUTHORIZATION).iter();
            let Some(first) = presented.next() else {
                return Some(error(
                    StatusCode::UNAUTHORIZED,
                    "MissingToken",
                    "send the token from listen.token_file in the Authorization header",
                ));
            };
            if presented.next().is_some() {
                return Some(error(
                    StatusCode::FORBIDDEN,
                    "InvalidToken",
                    "send the Authorization header once",
                ));
            }
            let presented = first.as_bytes();
            let matches = |token: &SecretString| {
                bool::from(token.expose_secret().as_bytes().ct_eq(presented))
            };
            let allowed = matches(&state.token) || slot.token.as_ref().is_some_and(matches);
            (!allowed).then(|| {
                error(
                    StatusCode::FORBIDDEN,
                    "InvalidToken",
                    "the Authorization token is not valid for this role",
                )
            })
        }
        Peer::Unix { uid, gid, .. } => {
            let listen = &state.listen;
            let spec = &slot.spec;
            let listener_ok = allowed(&listen.allowed_uids, &listen.allowed_gids, *uid, *gid);
            let role_ok = allowed(&spec.allowed_uids, &spec.allowed_gids, *uid, *gid);
            let lists = match (listener_ok, role_ok) {
                (true, true) => return None,
                (false, true) => "listen.allowed_uids or listen.allowed_gids".to_owned(),
                (true, false) => format!("allowed_uids or allowed_gids of role {}", spec.name),
                (false, false) => format!(
                    "listen.allowed_uids or listen.allowed_gids, and allowed_uids or allowed_gids of role {}",
                    spec.name
                ),
            };
            let message = format!(
                "uid {uid} gid {gid} may not read role {}; add the uid or a gid to {lists}",
                spec.name
            );
            Some(error(StatusCode::FORBIDDEN, "PeerNotAllowed", &message))
        }
    }
}

/// An empty allowlist admits everyone who can reach the socket.
fn allowed(uids: &[u32], gids: &[u32], uid: u32, gid: u32) -> bool {
    (uids.is_empty() && gids.is_empty()) || uids.contains(&uid) || gids.contains(&gid)
}

fn audited(peer: &Peer, role: &str, response: Response) -> Response {
    let status = response.status().as_u16();
    let role = truncate(role);
    match peer {
        Peer::Unix { uid, gid, pid } => {
            tracing::info!(target: "assumed::audit", role = %AuditedRole(role), listener = %"unix", status, uid, gid, pid = pid.unwrap_or(0), "credential request");
        }
        Peer::Tcp { .. } => {
            tracing::info!(target: "assumed::audit", role = %AuditedRole(role), listener = %"tcp", status, "credential request");
        }
    }
    response
}

/// Caps what a client sent before it is echoed in a message or a log.
/// A role as its audit line shows it. A valid role name is written as it
/// is, which spares the quoting and escaping of a `Debug` field, most of a
/// line's cost; any other text a client sent is quoted and escaped, so it
/// cannot pass for other fields.
struct AuditedRole<'a>(&'a str);

impl std::fmt::Display for AuditedRole<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == "-" || RoleName::is_valid(self.0) {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

fn truncate(text: &str) -> &str {
    let end = text
        .char_indices()
        .nth(64)
        .map_or(text.len(), |(index, _)| index);
    &text[..end]
}

async fn health(State(state): State<Arc<ServerState>>) -> Response {
    let now = state.clock.host_now();
    let table = state.store.table();
    let mut roles = BTreeMap::new();
    let mut all_usable = true;
    for (name, slot) in &table.roles {
        let usable = slot.usable(now).is_some();
        all_usable &= usable;
        roles.insert(name.as_str().to_owned(), role_health(slot, usable, now));
    }
    let current_ledger = state.ledger.load();
    let ledger = current_ledger.stats();
    let body = json!({
        "status": if all_usable { "ok" } else { "degraded" },
        "time": rfc3339(now),
        "clock_offset_seconds": state.clock.offset_ms().map(|ms| ms as f64 / 1000.0),
        "mfa": {
            "serial_number": current_ledger.serial_number(),
            "codes_used": ledger.codes_issued,
            "codes_used_this_window": ledger.issued_this_window,
        },
        "mfa_session": table.mfa_session.as_deref().map(|mfa| mfa_session_health(mfa, now)),
        "roles": roles,
    });
    let status = if all_usable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Session-token mode's MFA session: when it expires and how its refreshes go.
fn mfa_session_health(mfa: &MfaSession, now: SystemTime) -> serde_json::Value {
    let state = mfa.state();
    json!({
        "usable": state.usable(now).is_some(),
        "duration_seconds": mfa.duration.as_secs(),
        "expires": state.session.as_ref().map(|c| rfc3339(c.expiration)),
        "expires_in_seconds": state.session.as_ref().map(|c| c.remaining(now).as_secs()),
        "refused_by_sts": state.rejected,
        "last_refresh": state.last_refresh.map(rfc3339),
        "next_refresh": state.next_attempt.map(rfc3339),
        "refreshes": state.refreshes,
        "last_error": state.last_error.map(|failure| json!({
            "class": failure.class.name(),
            "message": failure.message,
            "hint": failure.class.hint(),
            "at": rfc3339(failure.at),
        })),
    })
}

fn role_health(slot: &RoleSlot, usable: bool, now: SystemTime) -> serde_json::Value {
    let status = slot.status();
    let held = slot.held();
    json!({
        "usable": usable,
        "arn": slot.spec.arn,
        "expires": held.as_ref().map(|c| rfc3339(c.expiration)),
        "expires_in_seconds": held.as_ref().map(|c| c.remaining(now).as_secs()),
        "last_refresh": status.last_refresh.map(rfc3339),
        "next_refresh": status.next_attempt.map(rfc3339),
        "refreshes": status.refreshes,
        "last_error": status.last_error.map(|failure| json!({
            "class": failure.class.name(),
            "message": failure.message,
            "hint": failure.class.hint(),
            "at": rfc3339(failure.at),
        })),
    })
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        state.metrics.render(),
    )
        .into_response()
}
