//! The guards, one hostile or malformed request at a time, through the
//! router without a network; and generated requests that must never get a
//! credential unless they are well-formed and carry the right token.
//!
//! Each `refuses_…` test is one kind of hostile request; the README's
//! security section counts them together with the socket-level ones in
//! `tests/guards.rs` and `listener.rs`.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use secrecy::SecretString;
use tower::ServiceExt;

use super::*;
use crate::clock::SystemClock;
use crate::config::{ListenSettings, RoleName, RoleSpec};
use crate::credential::Credential;
use crate::session::{RoleSlot, RoleTable, Store};
use crate::totp::TotpLedger;

const PORT: u16 = 9911;
const HOST: &str = "127.0.0.1:9911";
const TOKEN: &str = "listener-token-0123456789abcdefghijklmnop";
const ALPHA_TOKEN: &str = "alpha-token-0123456789abcdefghijklmnopqr";
/// Every served secret key starts with this, to spot one in any answer.
const SECRET_MARKER: &str = "MARKERvendedSecret";
/// A uid no test runs as, allowed where an allowlist must hold someone.
const OTHER_UID: u32 = 4242;

fn spec(name: &str, allowed_uids: Vec<u32>) -> RoleSpec {
    RoleSpec {
        name: RoleName::parse(name).unwrap(),
        arn: format!("arn:aws:iam::123456789012:role/{name}"),
        account_id: "123456789012".into(),
        session_name: "test".into(),
        duration: Duration::from_secs(3600),
        external_id: None,
        policy_arns: vec![],
        tags: vec![],
        source_identity: None,
        allowed_uids,
        allowed_gids: vec![],
        token_file: None,
    }
}

fn slot(spec: RoleSpec, token: Option<&str>) -> Arc<RoleSlot> {
    let mut slot = RoleSlot::new(spec.clone());
    slot.token = token.map(|token| SecretString::from(token.to_owned()));
    let now = SystemTime::now();
    slot.publish(
        Credential::new(
            format!("ASIA{}", spec.name.as_str().to_ascii_uppercase()),
            SecretString::from(format!("{SECRET_MARKER}-{}", spec.name)),
            SecretString::from("session-token".to_owned()),
            now + Duration::from_secs(3600),
            "123456789012".into(),
        ),
        now,
    );
    Arc::new(slot)
}

/// Two roles: `alpha` with its own token and a Unix allowlist of
/// [`OTHER_UID`], and `beta`, the default, with neither.
fn app_with(listen_uids: Vec<u32>, listen_gids: Vec<u32>) -> Router {
    let mut table = RoleTable {
        default: RoleName::parse("beta"),
        ..RoleTable::default()
    };
    for slot in [
        slot(spec("alpha", vec![OTHER_UID]), Some(ALPHA_TOKEN)),
        slot(spec("beta", vec![]), None),
    ] {
        table.roles.insert(slot.spec.name.clone(), slot);
    }
    let clock = Arc::new(StsClock::new(Arc::new(SystemClock)));
    let seed = secrecy::SecretSlice::from(b"12345678901234567890".to_vec());
    let ledger = Arc::new(TotpLedger::new("serial".into(), &seed, clock.clone()));
    let ledger: crate::totp::CurrentLedger = Arc::new(arc_swap::ArcSwap::new(ledger));
    let store = Arc::new(Store::new(table));
    let metrics = Arc::new(crate::metrics::Metrics::new(
        store.clone(),
        ledger.clone(),
        clock.clone(),
    ));
    router(Arc::new(ServerState {
        store,
        clock,
        ledger,
        metrics,
        token: SecretString::from(TOKEN.to_owned()),
        listen: ListenSettings {
            unix_socket: None,
            tcp: None,
            token_file: "/run/assumed/token".into(),
            allowed_uids: listen_uids,
            allowed_gids: listen_gids,
            socket_group: None,
            max_connections: 16,
        },
    }))
}

fn app() -> Router {
    app_with(vec![], vec![])
}

/// A well-formed TCP request with the listener's token.
fn tcp(method: &str, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", HOST)
        .header("authorization", TOKEN)
        .extension(Peer::Tcp { local_port: PORT })
}

fn unix(uri: &str, uid: u32, gid: u32) -> axum::http::request::Builder {
    Request::builder().uri(uri).extension(Peer::Unix {
        uid,
        gid,
        pid: Some(1),
    })
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn code(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|body| body["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

async fn send_to(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn send(request: axum::http::request::Builder) -> Answer {
    send_to(&app(), request.body(Body::empty()).unwrap()).await
}

/// Asserts the status and error code, and that no secret came back.
#[track_caller]
fn assert_refused(answer: &Answer, status: u16, code: &str, what: &str) {
    assert_eq!(
        (answer.status.as_u16(), answer.code().as_str()),
        (status, code),
        "{what}: {}",
        answer.body
    );
    assert!(
        !answer.body.contains(SECRET_MARKER),
        "{what} got a credential"
    );
}

async fn assert_all_refused(
    requests: Vec<(String, axum::http::request::Builder)>,
    status: u16,
    code: &str,
) {
    for (what, request) in requests {
        assert_refused(&send(request).await, status, code, &what);
    }
}

fn with_host(host: &str) -> (String, axum::http::request::Builder) {
    let mut request = tcp("GET", "/v1/credentials/beta");
    request.headers_mut().unwrap().remove("host");
    (format!("Host {host:?}"), request.header("host", host))
}

fn with_token(token: &str) -> axum::http::request::Builder {
    let mut request = tcp("GET", "/v1/credentials/beta");
    request.headers_mut().unwrap().remove("authorization");
    request.header("authorization", token)
}

#[tokio::test]
async fn a_well_formed_request_with_the_token_gets_the_credential_over_every_accepted_host() {
    for host in [
        "127.0.0.1",
        "127.0.0.1:9911",
        "localhost",
        "LOCALHOST:9911",
        "LocalHost",
        "[::1]",
        "[::1]:9911",
    ] {
        let (_, request) = with_host(host);
        let answer = send(request).await;
        assert_eq!(answer.status, 200, "Host {host:?}: {}", answer.body);
        assert!(answer.body.contains(SECRET_MARKER));
    }
    let answer = send(tcp("HEAD", "/v1/credentials")).await;
    assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, ""));
    let answer = send(tcp("GET", "/v1/credentials").header("content-length", "0")).await;
    assert_eq!(answer.status, 200, "an explicit empty body is no body");
}

#[tokio::test]
async fn refuses_state_changing_methods_with_405_and_allow() {
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let answer = send(tcp(method, "/v1/credentials/beta")).await;
        assert_refused(&answer, 405, "MethodNotAllowed", method);
        assert_eq!(answer.headers["allow"], "GET, HEAD");
    }
}

#[tokio::test]
async fn refuses_a_cors_preflight_options_request_with_405() {
    let request = tcp("OPTIONS", "/v1/credentials/beta")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization");
    let answer = send(request).await;
    assert_refused(&answer, 405, "MethodNotAllowed", "OPTIONS");
    assert!(!answer.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn refuses_trace_with_405_so_nothing_is_echoed() {
    let answer = send(tcp("TRACE", "/v1/credentials/beta")).await;
    assert_refused(&answer, 405, "MethodNotAllowed", "TRACE");
    assert!(!answer.body.contains(TOKEN), "the token is not echoed");
}

#[tokio::test]
async fn refuses_connect_tunnels_with_405() {
    let answer = send(tcp("CONNECT", "127.0.0.1:9911")).await;
    assert_refused(&answer, 405, "MethodNotAllowed", "CONNECT");
}

#[tokio::test]
async fn refuses_unknown_extension_methods_with_405() {
    for method in ["FOO", "get", "PROPFIND"] {
        let answer = send(tcp(method, "/v1/credentials/beta")).await;
        assert_refused(&answer, 405, "MethodNotAllowed", method);
    }
}

#[tokio::test]
async fn refuses_absolute_form_request_targets_with_400() {
    for uri in [
        "http://evil.example/v1/credentials/beta",
        "http://127.0.0.1:9911/v1/credentials/beta",
    ] {
        let answer = send(tcp("GET", uri)).await;
        assert_refused(&answer, 400, "AbsoluteFormRequest", uri);
    }
}

#[tokio::test]
async fn refuses_dot_segments_with_400() {
    for uri in [
        "/v1/credentials/../healthz",
        "/v1/credentials/..",
        "/v1/./credentials/beta",
        "/v1/credentials/beta/.",
        "/healthz/../v1/credentials",
    ] {
        let answer = send(tcp("GET", uri)).await;
        assert_refused(&answer, 400, "NonCanonicalPath", uri);
    }
}

#[tokio::test]
async fn refuses_percent_encoded_paths_with_400() {
    for uri in [
        "/v1/credentials/%2e%2e/healthz",
        "/v1/credentials/%62eta",
        "/v1/credentials/beta%2F..",
        "/v1/credentials/%FF",
        "/v1/credentials/beta%00",
    ] {
        let answer = send(tcp("GET", uri)).await;
        assert_refused(&answer, 400, "NonCanonicalPath", uri);
    }
}

#[tokio::test]
async fn refuses_empty_path_segments_with_400() {
    for uri in [
        "//v1/credentials/beta",
        "/v1//credentials/beta",
        "/v1/credentials//beta",
    ] {
        let answer = send(tcp("GET", uri)).await;
        assert_refused(&answer, 400, "NonCanonicalPath", uri);
    }
}

#[tokio::test]
async fn refuses_a_trailing_slash_with_404() {
    for uri in ["/v1/credentials/", "/v1/credentials/beta/"] {
        let answer = send(tcp("GET", uri)).await;
        assert_refused(&answer, 404, "NotFound", uri);
    }
}

#[tokio::test]
async fn refuses_an_overlong_role_name_with_404_without_echoing_it_whole() {
    let name = "a".repeat(10_000);
    let answer = send(tcp("GET", &format!("/v1/credentials/{name}"))).await;
    assert_refused(&answer, 404, "UnknownRole", "a 10 000-character name");
    assert!(
        answer.body.len() < 500,
        "the name is truncated in the message"
    );
}

#[tokio::test]
async fn refuses_metadata_service_probes_with_404() {
    for uri in [
        "/latest/meta-data/iam/security-credentials/",
        "/latest/api/token",
        "/v2/credentials",
        "/V1/credentials",
    ] {
        let answer = send(tcp("GET", uri)).await;
        assert_refused(&answer, 404, "NotFound", uri);
    }
}

#[tokio::test]
async fn refuses_a_get_with_a_content_length_body_with_400() {
    let answer = send(tcp("GET", "/v1/credentials/beta").header("content-length", "5")).await;
    assert_refused(&answer, 400, "UnexpectedBody", "Content-Length: 5");
}

#[tokio::test]
async fn refuses_a_get_with_transfer_encoding_with_400() {
    for encoding in ["chunked", "gzip, chunked"] {
        let request = tcp("GET", "/v1/credentials/beta").header("transfer-encoding", encoding);
        assert_refused(&send(request).await, 400, "UnexpectedBody", encoding);
    }
}

#[tokio::test]
async fn refuses_x_forwarded_for_with_400() {
    let request = tcp("GET", "/v1/credentials/beta").header("x-forwarded-for", "203.0.113.9");
    assert_refused(
        &send(request).await,
        400,
        "ProxiedRequest",
        "X-Forwarded-For",
    );
}

#[tokio::test]
async fn refuses_forwarded_with_400() {
    let request = tcp("GET", "/v1/credentials/beta").header("forwarded", "for=203.0.113.9");
    assert_refused(&send(request).await, 400, "ProxiedRequest", "Forwarded");
}

#[tokio::test]
async fn refuses_via_with_400() {
    let request = tcp("GET", "/v1/credentials/beta").header("via", "1.1 squid");
    assert_refused(&send(request).await, 400, "ProxiedRequest", "Via");
}

#[tokio::test]
async fn refuses_the_other_proxy_headers_with_400() {
    let requests = [
        "x-real-ip",
        "x-forwarded-host",
        "x-forwarded-proto",
        "X-Forwarded-Port",
    ]
    .into_iter()
    .map(|name| {
        let request = tcp("GET", "/v1/credentials/beta").header(name, "x");
        (name.to_owned(), request)
    })
    .collect();
    assert_all_refused(requests, 400, "ProxiedRequest").await;
}

#[tokio::test]
async fn refuses_any_origin_with_403() {
    let requests = ["http://evil.example", "null", "http://127.0.0.1:9911"]
        .into_iter()
        .map(|origin| {
            let request = tcp("GET", "/v1/credentials/beta").header("origin", origin);
            (format!("Origin {origin}"), request)
        })
        .collect();
    assert_all_refused(requests, 403, "BrowserRequest").await;
}

#[tokio::test]
async fn refuses_a_browser_request_without_origin_by_its_fetch_metadata_with_403() {
    let requests = ["sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest"]
        .into_iter()
        .map(|name| {
            let request = tcp("GET", "/healthz").header(name, "no-cors");
            (name.to_owned(), request)
        })
        .collect();
    assert_all_refused(requests, 403, "BrowserRequest").await;
}

#[tokio::test]
async fn refuses_a_foreign_host_name_with_403() {
    let requests = ["evil.example", "evil.example:9911", "attacker.test"]
        .map(with_host)
        .into();
    assert_all_refused(requests, 403, "BadHost").await;
}

#[tokio::test]
async fn refuses_rebinding_names_that_embed_a_loopback_name_with_403() {
    let requests = [
        "127.0.0.1.nip.io",
        "127.0.0.1.nip.io:9911",
        "localhost.evil.example",
        "evil.localhost",
        "localtest.me",
    ]
    .map(with_host)
    .into();
    assert_all_refused(requests, 403, "BadHost").await;
}

#[tokio::test]
async fn refuses_a_host_with_a_trailing_dot_with_403() {
    let requests = ["localhost.", "localhost.:9911", "127.0.0.1."]
        .map(with_host)
        .into();
    assert_all_refused(requests, 403, "BadHost").await;
}

#[tokio::test]
async fn refuses_a_host_naming_another_port_with_403() {
    let requests = ["127.0.0.1:80", "localhost:9912", "[::1]:1"]
        .map(with_host)
        .into();
    assert_all_refused(requests, 403, "BadHost").await;
}

#[tokio::test]
async fn refuses_a_host_with_a_malformed_port_with_403() {
    let requests = [
        "127.0.0.1:",
        "127.0.0.1:http",
        "127.0.0.1:+9911",
        "127.0.0.1:-9911",
        "127.0.0.1:75447",
        "127.0.0.1:9911:9911",
        "localhost: 9911",
    ]
    .map(with_host)
    .into();
    assert_all_refused(requests, 403, "BadHost").await;
}

#[tokio::test]
async fn refuses_a_host_with_userinfo_with_403() {
    let requests = [
        "user@127.0.0.1",
        "127.0.0.1@evil.example",
        "user:pw@localhost:9911",
    ]
    .map(with_host)
    .into();
    assert_all_refused(requests, 403, "BadHost").await;
}

#[tokio::test]
async fn refuses_a_tcp_request_without_host_with_403() {
    let mut request = tcp("GET", "/v1/credentials/beta");
    request.headers_mut().unwrap().remove("host");
    assert_refused(&send(request).await, 403, "BadHost", "no Host");
}

#[tokio::test]
async fn refuses_two_host_headers_with_403() {
    for second in ["127.0.0.1:9911", "evil.example"] {
        let request = tcp("GET", "/v1/credentials/beta").header("host", second);
        assert_refused(&send(request).await, 403, "BadHost", second);
    }
}

#[tokio::test]
async fn refuses_other_spellings_of_loopback_with_403() {
    let requests = [
        "127.0.0.2",
        "127.1",
        "0.0.0.0",
        "2130706433",
        "0x7f.0.0.1",
        "::1",
        "[0:0:0:0:0:0:0:1]",
        "[::ffff:127.0.0.1]",
        "[::1",
    ]
    .map(with_host)
    .into();
    assert_all_refused(requests, 403, "BadHost").await;
}

#[tokio::test]
async fn refuses_a_host_that_is_not_ascii_with_403() {
    let mut request = tcp("GET", "/v1/credentials/beta");
    request.headers_mut().unwrap().insert(
        "host",
        axum::http::HeaderValue::from_bytes(b"localh\xc3\xb6st").unwrap(),
    );
    assert_refused(&send(request).await, 403, "BadHost", "non-ASCII Host");
}

#[tokio::test]
async fn refuses_a_credential_request_without_a_token_with_401() {
    let mut request = tcp("GET", "/v1/credentials/beta");
    request.headers_mut().unwrap().remove("authorization");
    assert_refused(&send(request).await, 401, "MissingToken", "no token");
}

#[tokio::test]
async fn refuses_a_wrong_token_with_403() {
    for token in ["x".repeat(TOKEN.len()), String::new(), "null".to_owned()] {
        let answer = send(with_token(&token)).await;
        assert_refused(&answer, 403, "InvalidToken", &format!("token {token:?}"));
    }
}

#[tokio::test]
async fn refuses_near_misses_of_the_token_with_403() {
    let near = [
        TOKEN[..TOKEN.len() - 1].to_owned(),
        format!("{TOKEN}x"),
        // Spaces around a header value are not part of it (hyper strips
        // them on the wire); one inside is.
        format!("{} {}", &TOKEN[..10], &TOKEN[10..]),
        TOKEN.to_ascii_uppercase(),
        TOKEN[..16].to_owned(),
    ];
    for token in near {
        let answer = send(with_token(&token)).await;
        assert_refused(&answer, 403, "InvalidToken", &format!("token {token:?}"));
    }
}

#[tokio::test]
async fn refuses_the_token_under_an_authorization_scheme_with_403() {
    for token in [format!("Bearer {TOKEN}"), format!("Basic {TOKEN}")] {
        let answer = send(with_token(&token)).await;
        assert_refused(&answer, 403, "InvalidToken", &token);
    }
}

#[tokio::test]
async fn refuses_two_authorization_headers_even_if_one_is_right_with_403() {
    for (first, second) in [("wrong", TOKEN), (TOKEN, "wrong"), (TOKEN, TOKEN)] {
        let request = with_token(first).header("authorization", second);
        assert_refused(
            &send(request).await,
            403,
            "InvalidToken",
            &format!("{first} then {second}"),
        );
    }
}

#[tokio::test]
async fn refuses_a_roles_own_token_on_another_role_with_403() {
    let alpha = |uri: &str| {
        let mut request = tcp("GET", uri);
        request.headers_mut().unwrap().remove("authorization");
        request.header("authorization", ALPHA_TOKEN)
    };
    let answer = send(alpha("/v1/credentials/alpha")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains(&format!("{SECRET_MARKER}-alpha")));
    for uri in ["/v1/credentials/beta", "/v1/credentials"] {
        let answer = send(alpha(uri)).await;
        assert_refused(
            &answer,
            403,
            "InvalidToken",
            &format!("alpha's token on {uri}"),
        );
    }
    let answer = send(tcp("GET", "/v1/credentials/alpha")).await;
    assert_eq!(answer.status, 200, "the listener's token grants every role");
}

#[tokio::test]
async fn refuses_a_unix_peer_outside_the_listeners_allowlist_with_403() {
    let app = app_with(vec![OTHER_UID], vec![1500]);
    let refused = send_to(
        &app,
        unix("/v1/credentials/beta", 0, 0)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_refused(&refused, 403, "PeerNotAllowed", "root, not listed");
    for (uid, gid) in [(OTHER_UID, 0), (1000, 1500)] {
        let request = unix("/v1/credentials/beta", uid, gid)
            .body(Body::empty())
            .unwrap();
        let answer = send_to(&app, request).await;
        assert_eq!(answer.status, 200, "uid {uid} gid {gid}: {}", answer.body);
    }
}

#[tokio::test]
async fn refuses_a_unix_peer_outside_the_roles_allowlist_with_403() {
    let refused = send(unix("/v1/credentials/alpha", 1000, 1000)).await;
    assert_refused(&refused, 403, "PeerNotAllowed", "uid 1000 on alpha");
    let answer = send(unix("/v1/credentials/alpha", OTHER_UID, 1000)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = send(unix("/v1/credentials/beta", 1000, 1000)).await;
    assert_eq!(answer.status, 200, "beta has no list of its own");
}

#[tokio::test]
async fn a_request_without_a_peer_is_refused() {
    let request = Request::get("/healthz").body(Body::empty()).unwrap();
    assert_refused(&send_to(&app(), request).await, 403, "Forbidden", "no peer");
}

// Generated requests. Every hostile ingredient comes from a labelled list,
// so the expected answer follows from the labels, not from the guard code.

/// A Host value and whether it names this listener.
fn hosts() -> impl Strategy<Value = Option<(String, bool)>> {
    let listed = prop::sample::select(vec![
        ("127.0.0.1", true),
        ("127.0.0.1:9911", true),
        ("localhost", true),
        ("LOCALHOST:9911", true),
        ("[::1]", true),
        ("[::1]:9911", true),
        ("localhost.", false),
        ("127.0.0.1.nip.io", false),
        ("user@127.0.0.1", false),
        ("127.0.0.1:9912", false),
        ("127.0.0.1:x", false),
        ("::1", false),
        ("0.0.0.0", false),
    ])
    .prop_map(|(host, ok)| (host.to_owned(), ok));
    let port = any::<u16>().prop_map(|port| (format!("localhost:{port}"), port == PORT));
    let name = "[a-z0-9.-]{1,20}".prop_map(|name| {
        let ok = matches!(name.as_str(), "localhost" | "127.0.0.1");
        (name, ok)
    });
    prop::option::weighted(0.9, prop_oneof![4 => listed, 1 => port, 1 => name])
}

/// Authorization values (none, one, or two) and the roles they grant.
fn tokens() -> impl Strategy<Value = (Vec<String>, Vec<&'static str>)> {
    prop::collection::vec(token(), 0..=2).prop_map(|tokens| match tokens.as_slice() {
        [(_, grants)] => (vec![tokens[0].0.clone()], grants.clone()),
        _ => (tokens.into_iter().map(|(token, _)| token).collect(), vec![]),
    })
}

/// One Authorization value and the roles it grants.
fn token() -> impl Strategy<Value = (String, Vec<&'static str>)> {
    let listed = prop::sample::select(vec![
        (TOKEN.to_owned(), vec!["alpha", "beta"]),
        (ALPHA_TOKEN.to_owned(), vec!["alpha"]),
        (format!("Bearer {TOKEN}"), vec![]),
        (TOKEN[1..].to_owned(), vec![]),
        (format!("{ALPHA_TOKEN}0"), vec![]),
    ]);
    let random = "[ -~]{0,48}".prop_map(|token| {
        let grants = match token.as_str() {
            TOKEN => vec!["alpha", "beta"],
            ALPHA_TOKEN => vec!["alpha"],
            _ => vec![],
        };
        (token, grants)
    });
    prop_oneof![4 => listed, 1 => random]
}

/// Headers that must each make the request fail.
const HOSTILE_HEADERS: &[(&str, &str)] = &[
    ("x-forwarded-for", "203.0.113.9"),
    ("forwarded", "for=203.0.113.9"),
    ("via", "1.1 proxy"),
    ("x-real-ip", "203.0.113.9"),
    ("origin", "http://evil.example"),
    ("sec-fetch-site", "cross-site"),
    ("content-length", "7"),
    ("transfer-encoding", "chunked"),
];

/// Headers that change nothing: the names cannot collide with any that matter.
fn harmless_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let named = prop::sample::select(vec![
        ("user-agent", "aws-sdk-rust/1.0"),
        ("accept", "*/*"),
        ("accept-encoding", "gzip"),
        ("connection", "keep-alive"),
        ("content-length", "0"),
    ])
    .prop_map(|(name, value)| (name.to_owned(), value.to_owned()));
    let random = ("[a-z]{1,10}", "[ -~]{0,30}")
        .prop_map(|(name, value)| (format!("x-test-{name}"), value.trim().to_owned()));
    prop::collection::vec(prop_oneof![named, random], 0..4)
}

/// A path and the role it asks for (`None` for anything but a credential).
fn paths() -> impl Strategy<Value = (String, Option<&'static str>)> {
    let listed = prop::sample::select(vec![
        ("/v1/credentials", Some("beta")),
        ("/v1/credentials/alpha", Some("alpha")),
        ("/v1/credentials/beta", Some("beta")),
        ("/v1/credentials/gamma", None),
        ("/v1/credentials/", None),
        ("/v1/credentials/../healthz", None),
        ("/v1/credentials/%61lpha", None),
        ("//v1/credentials/alpha", None),
        ("/v1/credentials/alpha/", None),
        ("/v1/credentials/./alpha", None),
        ("/healthz", None),
        ("http://evil.example/v1/credentials/alpha", None),
    ])
    .prop_map(|(path, role)| (path.to_owned(), role));
    let random = "/[a-z0-9./%_-]{0,30}".prop_map(|path| (path, None));
    prop_oneof![4 => listed, 1 => random]
}

fn methods() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "FOO",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn only_well_formed_requests_with_the_right_token_get_a_credential(
        method in methods(),
        (path, role) in paths(),
        host in hosts(),
        (tokens, grants) in tokens(),
        hostile in prop::option::weighted(0.3, prop::sample::select(HOSTILE_HEADERS)),
        harmless in harmless_headers(),
    ) {
        let mut request = Request::builder()
            .method(method)
            .uri(&path)
            .extension(Peer::Tcp { local_port: PORT });
        if let Some((host, _)) = &host {
            request = request.header("host", host.as_str());
        }
        for value in &tokens {
            request = request.header("authorization", value.as_str());
        }
        if let Some((name, value)) = hostile {
            request = request.header(name, value);
        }
        for (name, value) in &harmless {
            request = request.header(name.as_str(), value.as_str());
        }
        let Ok(request) = request.body(Body::empty()) else {
            return Ok(());
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let answer = runtime.block_on(send_to(&app(), request));

        let well_formed = matches!(method, "GET" | "HEAD")
            && hostile.is_none()
            && host.as_ref().is_some_and(|(_, ok)| *ok);
        let granted = role.is_some_and(|role| grants.contains(&role));
        let expect_credential = well_formed && granted;
        prop_assert_eq!(
            answer.status == StatusCode::OK && role.is_some(),
            expect_credential,
            "{} {} host {:?} tokens {:?} hostile {:?}: {} {}",
            method, path, host, tokens, hostile, answer.status, answer.body
        );
        if !expect_credential {
            prop_assert!(!answer.body.contains(SECRET_MARKER), "{}", answer.body);
        }
        if answer.status == StatusCode::OK {
            prop_assert!(well_formed, "a 200 for a malformed request: {}", answer.body);
        }
    }
}

#[test]
fn an_audited_role_is_plain_when_valid_and_quoted_when_a_client_made_it_up() {
    assert_eq!(AuditedRole("duper").to_string(), "duper");
    assert_eq!(AuditedRole("-").to_string(), "-");
    assert_eq!(
        AuditedRole("x\"status=200").to_string(),
        r#""x\"status=200""#,
        "text that could pass for another field is quoted and escaped"
    );
}
