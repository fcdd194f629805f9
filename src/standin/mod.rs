//! A local stand-in for AWS STS, for `assumed demo` and the integration tests.
//!
//! [`StandIn::start`] serves the STS query protocol over plain HTTP on a
//! loopback listener, so the real `aws-sdk-sts` client talks to it exactly as
//! it talks to STS once its endpoint URL is [`StandIn::endpoint`]. It answers
//! `AssumeRole`, `GetSessionToken` and `GetCallerIdentity` (API version
//! `2011-06-15`, form-encoded `POST /`); any other action gets `400
//! InvalidAction`. It plays one AWS account with one IAM user, `svc`, whose
//! single long-term access key and MFA devices come from [`StandInConfig`].
//!
//! What it enforces, following real STS:
//! - a SigV4 `Authorization` header naming the long-term key, or a session
//!   key it issued together with that session's `X-Amz-Security-Token` while
//!   the session lasts (`403 InvalidClientTokenId`, `403 ExpiredToken`); the
//!   HMAC itself is not checked;
//! - parameter rules for role ARNs, session names and `DurationSeconds`
//!   (`400 ValidationError`);
//! - MFA on every AssumeRole made with the long-term key, with STS's one-use
//!   codes, ±2-step window and per-device budget of 9 verifications per fixed
//!   3-minute UTC window (`403 AccessDenied`, see the `mfa` module);
//! - role chaining from GetSessionToken-with-MFA sessions without a code, at
//!   most one hour per session.
//!
//! Signing times are only checked after [`StandIn::set_signing_time_check`]
//! turns the check on; then a request signed more than 5 minutes away from
//! the stand-in's clock gets `403 SignatureDoesNotMatch`, as from STS.
//!
//! The stand-in has its own clock, the host's plus an offset set with
//! [`StandIn::set_clock_offset`]. It decides code validity, budget windows,
//! session expiry, `Expiration` in answers and the `Date` header that every
//! answer carries (with `x-amzn-RequestId`), so tests move time instead of
//! sleeping. Injected [`Fault`]s are applied before authentication and
//! validation. [`Stats`] counts every request as it arrives, faulted or not.
//!
//! The same listener answers the IAM calls that enroll, resynchronise and
//! remove a virtual MFA device (API version `2010-05-08`, told apart by
//! `Action`; see the `iam` module). A device enabled there is accepted by
//! the STS side at once, and [`StandIn::virtual_mfa_devices`] lists them.
//! Injected faults apply to IAM actions as to STS ones.
//!
//! Issued sessions, used codes, devices and counts live in memory for the
//! stand-in's lifetime. Secrets (keys, tokens, seeds, codes) are never logged.

mod faults;
mod iam;
mod mfa;
mod protocol;
mod sts;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, DATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::{Zeroize, ZeroizeOnDrop};

pub use faults::{Fault, FaultKind};
pub use iam::VirtualMfaDevice;

use faults::FaultQueue;
use protocol::Params;
use sts::{Account, Ledger, Request};

/// How long [`StandIn::shutdown`] waits for open connections to finish
/// before cutting them; long enough for an in-flight answer, short for tests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The header STS uses for its request id; the SDK reads it into `request_id()`.
const REQUEST_ID_HEADER: &str = "x-amzn-requestid";
/// The content type of every STS answer.
const XML_CONTENT_TYPE: &str = "text/xml";

/// What the stand-in plays: the account, the user's key and its MFA devices.
#[derive(Clone, Debug)]
pub struct StandInConfig {
    /// The only long-term access key accepted; SigV4 `Credential=` must name it.
    pub access_key_id: String,
    /// The 12-digit account id used in ARNs.
    pub account_id: String,
    /// The user's virtual MFA devices.
    pub devices: Vec<MfaDevice>,
    /// If set, every issued session lasts this long whatever `DurationSeconds`
    /// asked for, so demos and tests see expiry soon.
    pub session_lifetime: Option<Duration>,
}

/// A virtual MFA device: its serial number (an ARN) and raw seed bytes
/// (already base32-decoded). The seed is zeroed on drop and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MfaDevice {
    pub serial_number: String,
    pub seed: Vec<u8>,
}

impl fmt::Debug for MfaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MfaDevice")
            .field("serial_number", &self.serial_number)
            .field(
                "seed",
                &format_args!("<{} bytes redacted>", self.seed.len()),
            )
            .finish()
    }
}

/// Counts of what the stand-in has seen, for tests to assert on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// AssumeRole requests received, including faulted and refused ones.
    pub assume_role_calls: u64,
    /// GetSessionToken requests received, including faulted and refused ones.
    pub get_session_token_calls: u64,
    /// GetCallerIdentity requests received, including faulted and refused ones.
    pub get_caller_identity_calls: u64,
    /// Sessions issued by AssumeRole and GetSessionToken.
    pub sessions_issued: u64,
    /// MFA codes accepted.
    pub codes_accepted: u64,
    /// Wrong or out-of-window codes, and codes sent with an unknown serial number.
    pub codes_rejected: u64,
    /// Codes already accepted for their device, presented again; a well-behaved
    /// daemon keeps this at zero.
    pub codes_reused: u64,
    /// Verifications refused because the device's budget for the window was spent.
    pub budget_refusals: u64,
    /// The most MFA verifications (of any outcome) any one device has had in
    /// any one 3-minute window.
    pub max_verifications_in_window: u64,
    /// AssumeRole requests received per `RoleArn`.
    pub calls_by_role: BTreeMap<String, u64>,
    /// IAM requests received per action, including faulted and refused ones.
    pub iam_calls: BTreeMap<String, u64>,
}

/// What the last authenticated AssumeRole request carried, and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssumeRoleRecord {
    pub role_arn: String,
    pub role_session_name: String,
    /// `DurationSeconds` as sent, if it was an integer.
    pub duration_seconds: Option<u32>,
    pub serial_number: Option<String>,
    pub external_id: Option<String>,
    /// `PolicyArns.member.N.arn`, in order.
    pub policy_arns: Vec<String>,
    /// `Tags.member.N.Key` and `.Value` pairs, in order.
    pub tags: Vec<(String, String)>,
    pub source_identity: Option<String>,
    /// Whether the call was signed with session credentials.
    pub role_chaining: bool,
    /// The STS error code of the answer; `None` when a session was issued.
    pub error_code: Option<String>,
}

/// A running stand-in; it stops serving when shut down or dropped.
pub struct StandIn {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<io::Result<()>>>,
}

/// State shared between the handle and the request handlers.
struct Shared {
    account: Account,
    clock: Clock,
    check_signing_time: AtomicBool,
    ledger: Mutex<Ledger>,
    /// IAM's virtual MFA devices; locked after `ledger` when both are needed.
    iam: Mutex<iam::Directory>,
    faults: Mutex<FaultQueue>,
    /// Becomes `true` (or closes) when the stand-in shuts down; releases hung requests.
    shutdown: watch::Receiver<bool>,
}

/// The stand-in's clock: the host's plus an offset in seconds.
#[derive(Default)]
struct Clock {
    offset_secs: AtomicI64,
}

impl Clock {
    fn now(&self) -> SystemTime {
        let host = SystemTime::now();
        let offset = self.offset_secs.load(Ordering::Relaxed);
        let shift = Duration::from_secs(offset.unsigned_abs());
        let shifted = if offset >= 0 {
            host.checked_add(shift)
        } else {
            host.checked_sub(shift)
        };
        shifted.unwrap_or(host)
    }
}

impl StandIn {
    /// Serves on `listener`, which must be bound to a loopback address
    /// (tests pass `127.0.0.1:0`), until shut down or dropped.
    pub async fn start(listener: TcpListener, config: StandInConfig) -> io::Result<StandIn> {
        let address = listener.local_addr()?;
        refuse_off_loopback(address)?;
        if !sts::is_account_id(&config.account_id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "stand-in account_id {:?} is not 12 digits",
                    config.account_id
                ),
            ));
        }

        let mut ledger = Ledger::new();
        for device in &config.devices {
            ledger.devices.add(&device.serial_number, &device.seed);
        }
        let (shutdown, shutdown_signal) = watch::channel(false);
        let shared = Arc::new(Shared {
            account: Account {
                access_key_id: config.access_key_id.clone(),
                account_id: config.account_id.clone(),
                session_lifetime: config.session_lifetime,
                role_session_lifetime: Mutex::new(None),
            },
            clock: Clock::default(),
            check_signing_time: AtomicBool::new(false),
            ledger: Mutex::new(ledger),
            iam: Mutex::new(iam::Directory::default()),
            faults: Mutex::new(FaultQueue::default()),
            shutdown: shutdown_signal.clone(),
        });

        let app = router(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shut_down(shutdown_signal))
                .await
        });
        tracing::info!(%address, "STS stand-in listening");
        Ok(StandIn {
            address,
            shared,
            shutdown,
            server: Some(server),
        })
    }

    /// The URL to give the SDK as its endpoint: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Queues a fault behind those already queued.
    pub fn inject(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Sets the stand-in's clock to the host's plus `offset_secs`.
    pub fn set_clock_offset(&self, offset_secs: i64) {
        self.shared
            .clock
            .offset_secs
            .store(offset_secs, Ordering::Relaxed);
    }

    /// Makes AssumeRole sessions issued from now on last `lifetime` (`None`:
    /// back to [`StandInConfig::session_lifetime`]), so role sessions can be
    /// shorter than the GetSessionToken sessions they are chained from.
    pub fn set_role_session_lifetime(&self, lifetime: Option<Duration>) {
        *lock(&self.shared.account.role_session_lifetime) = lifetime;
    }

    /// Revokes every session issued by GetSessionToken so far; role sessions
    /// stay valid.
    pub fn revoke_session_tokens(&self) {
        lock(&self.shared.ledger).revoke_session_tokens();
    }

    /// Turns on or off refusing requests signed more than 5 minutes away from
    /// the stand-in's clock (off at start).
    pub fn set_signing_time_check(&self, enabled: bool) {
        self.shared
            .check_signing_time
            .store(enabled, Ordering::Relaxed);
    }

    /// A snapshot of the counts so far.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.ledger).stats.clone()
    }

    /// What the last authenticated AssumeRole request carried.
    pub fn last_assume_role(&self) -> Option<AssumeRoleRecord> {
        lock(&self.shared.ledger).last_assume_role.clone()
    }

    /// Adds an MFA device, replacing (and forgetting the history of) any
    /// device with the same serial number.
    pub fn add_device(&self, device: MfaDevice) {
        lock(&self.shared.ledger)
            .devices
            .add(&device.serial_number, &device.seed);
    }

    /// The virtual MFA devices created through IAM, enabled or not.
    pub fn virtual_mfa_devices(&self) -> Vec<VirtualMfaDevice> {
        lock(&self.shared.iam).devices()
    }

    /// Turns on or off refusing DeactivateMFADevice from callers whose
    /// session did not prove MFA, as the policy `assumed policy` prints
    /// demands (off at start).
    pub fn set_mfa_required_to_deactivate(&self, required: bool) {
        lock(&self.shared.iam).mfa_required_to_deactivate = required;
    }

    /// Stops accepting connections, releases hung requests and waits briefly
    /// for open connections to close.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        let Some(mut server) = self.server.take() else {
            return;
        };

        match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(Ok(Ok(()))) => tracing::info!(address = %self.address, "STS stand-in stopped"),
            Ok(Ok(Err(error))) => tracing::warn!(%error, "STS stand-in stopped with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "STS stand-in task failed"),
            Err(_) => {
                server.abort();
                tracing::warn!(
                    grace = ?SHUTDOWN_GRACE,
                    "STS stand-in connections still open after the grace period; cut them"
                );
            }
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Refuses any address but loopback: the stand-in must never be reachable
/// from another host.
fn refuse_off_loopback(address: SocketAddr) -> io::Result<()> {
    if address.ip().is_loopback() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("the STS stand-in listens on loopback only, not {address}; bind 127.0.0.1:0"),
    ))
}

/// The stand-in's routes: STS on `POST /`, with `Date` and a request id on
/// every answer.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", post(answer_sts))
        .layer(axum::middleware::map_response_with_state(
            Arc::clone(&shared),
            stamp_headers,
        ))
        .with_state(shared)
}

async fn answer_sts(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = protocol::request_id();
    let params = Params::parse(&body);
    let action = params.get("Action").unwrap_or_default();

    let response = answer_with_faults(&shared, action, &params, &headers, &request_id).await;
    tracing::debug!(
        action,
        status = response.status().as_u16(),
        request_id,
        "STS stand-in answered"
    );
    response
}

async fn answer_with_faults(
    shared: &Shared,
    action: &str,
    params: &Params,
    headers: &HeaderMap,
    request_id: &str,
) -> Response {
    let is_iam = iam::is_iam_action(action);
    {
        let mut ledger = lock(&shared.ledger);
        ledger.count_call(action, params);
        if is_iam {
            *ledger.stats.iam_calls.entry(action.to_owned()).or_default() += 1;
        }
    }

    let fault = lock(&shared.faults).take(action);
    if let Some(kind) = fault
        && let Some(response) = apply_fault(shared, kind, action, request_id).await
    {
        return response;
    }

    let request = Request {
        action,
        params,
        headers,
        check_signing_time: shared.check_signing_time.load(Ordering::Relaxed),
    };
    let now = shared.clock.now();
    if is_iam {
        return answer_iam(shared, &request, now, request_id);
    }
    let outcome = lock(&shared.ledger).answer(&shared.account, &request, now);
    match outcome {
        Ok(reply) => xml_response(StatusCode::OK, reply.render(request_id), request_id),
        Err(error) => error_response(error.status(), error.code(), &error.to_string(), request_id),
    }
}

fn answer_iam(
    shared: &Shared,
    request: &Request<'_>,
    now: std::time::SystemTime,
    request_id: &str,
) -> Response {
    let mut ledger = lock(&shared.ledger);
    let mut directory = lock(&shared.iam);
    match iam::answer(&mut ledger, &mut directory, &shared.account, request, now) {
        Ok(reply) => xml_response(StatusCode::OK, reply.render(request_id), request_id),
        Err(error) => {
            let body =
                iam::render_error(error.status(), error.code(), &error.to_string(), request_id);
            xml_response(error.status(), body, request_id)
        }
    }
}

/// Carries out a fault; `None` means go on to answer normally.
async fn apply_fault(
    shared: &Shared,
    kind: FaultKind,
    action: &str,
    request_id: &str,
) -> Option<Response> {
    tracing::debug!(action, ?kind, "STS stand-in applying an injected fault");
    match kind {
        FaultKind::Error {
            status,
            code,
            message,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(error_response(status, &code, &message, request_id))
        }
        FaultKind::Delay(delay) => {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shut_down(shared.shutdown.clone()) => {}
            }
            None
        }
        FaultKind::Hang => {
            shut_down(shared.shutdown.clone()).await;
            let message = "The STS stand-in is shutting down";
            Some(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                message,
                request_id,
            ))
        }
        FaultKind::Malformed => Some(xml_response(
            StatusCode::OK,
            protocol::render_malformed(action),
            request_id,
        )),
    }
}

fn error_response(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let body = protocol::render_error(status.as_u16(), code, message, request_id);
    xml_response(status, body, request_id)
}

fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(XML_CONTENT_TYPE));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Sets `Date` from the stand-in's clock on every answer (hyper would
/// otherwise stamp the host's), and a request id where none was set.
async fn stamp_headers(State(shared): State<Arc<Shared>>, mut response: Response) -> Response {
    let date = httpdate::fmt_http_date(shared.clock.now());
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&date) {
        headers.insert(DATE, value);
    }
    if !headers.contains_key(REQUEST_ID_HEADER)
        && let Ok(value) = HeaderValue::from_str(&protocol::request_id())
    {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Resolves once shutdown is requested or the handle is gone.
async fn shut_down(mut signal: watch::Receiver<bool>) {
    // An error means the sender was dropped, which is a shutdown too.
    let _ = signal.wait_for(|stopping| *stopping).await;
}

/// Locks `mutex`, carrying on after a panic elsewhere: every update to the
/// stand-in's state is a single step that leaves it consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
