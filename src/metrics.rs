//! Prometheus metrics: the counters the daemon keeps, and the text that
//! `GET /metrics` serves (Prometheus text format 0.0.4).
//!
//! | metric | type | labels | what |
//! | --- | --- | --- | --- |
//! | `assumed_refreshes_total` | counter | `role`, `outcome`, `class` | finished refresh attempts; `outcome` is `success` or `failure`, `class` the failure class |
//! | `assumed_credential_expiry_seconds` | gauge | `role` | seconds until the held credential expires (negative once past); absent while none is held |
//! | `assumed_role_usable` | gauge | `role` | 1 while the role's credential may be served, else 0 |
//! | `assumed_totp_codes_used_total` | counter | | TOTP codes handed out by the ledger |
//! | `assumed_mfa_verifications_current_window` | gauge | | codes used in the current fixed 3-minute window |
//! | `assumed_mfa_verifications_window_limit` | gauge | | the most the ledger uses per window |
//! | `assumed_sts_request_duration_seconds` | histogram | `operation` | STS call latency, errors included |
//! | `assumed_sts_clock_offset_seconds` | gauge | | STS's clock minus the host's; absent until STS has answered |
//! | `assumed_http_requests_total` | counter | `listener`, `path`, `status` | requests answered, guard refusals included |
//! | `assumed_build_info` | gauge | `version` | always 1 |
//!
//! What can be read from the daemon's state (expiry, usability, the TOTP
//! ledger, the clock offset) is read at scrape time, so nothing has to be
//! kept in step with it.
//!
//! Counting a request is on every request's path, so it takes no lock and
//! allocates nothing: a fixed table of atomics indexed by listener, route
//! and status. `path` is the route's template (`/v1/credentials/{name}`),
//! or `unmatched` for anything the router has no route for, never the raw
//! path, so clients cannot grow the number of series.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use axum::extract::MatchedPath;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::clock::StsClock;
use crate::config::RoleName;
use crate::server::Peer;
use crate::session::Store;
use crate::sts::FailureClass;
use crate::totp::{BUDGET_PER_WINDOW, CurrentLedger};

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the STS latency buckets, in seconds: STS usually answers
/// within a few hundred milliseconds; the top buckets catch calls that run
/// into `aws.connect_timeout` + `aws.read_timeout`.
const STS_LATENCY_BUCKETS: [f64; 10] = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0];

/// Statuses counted in the lock-free table: every status HTTP defines.
/// Anything else (hyper accepts up to 999) goes to a small locked map.
const FIRST_STATUS: u16 = 100;
const STATUS_SLOTS: usize = 500;

/// The listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Listener {
    Unix,
    Tcp,
}

impl Listener {
    const ALL: [Listener; 2] = [Listener::Unix, Listener::Tcp];

    pub fn name(self) -> &'static str {
        match self {
            Listener::Unix => "unix",
            Listener::Tcp => "tcp",
        }
    }
}

/// The route a request matched, by its template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    DefaultCredentials,
    NamedCredentials,
    Health,
    Metrics,
    /// No route matched (the 404 fallback), or a route added to the router
    /// but not to this list.
    Unmatched,
}

impl Route {
    const ALL: [Route; 5] = [
        Route::DefaultCredentials,
        Route::NamedCredentials,
        Route::Health,
        Route::Metrics,
        Route::Unmatched,
    ];

    pub fn template(self) -> &'static str {
        match self {
            Route::DefaultCredentials => "/v1/credentials",
            Route::NamedCredentials => "/v1/credentials/{name}",
            Route::Health => "/healthz",
            Route::Metrics => "/metrics",
            Route::Unmatched => "unmatched",
        }
    }

    fn from_template(template: Option<&str>) -> Route {
        match template {
            Some("/v1/credentials") => Route::DefaultCredentials,
            Some("/v1/credentials/{name}") => Route::NamedCredentials,
            Some("/healthz") => Route::Health,
            Some("/metrics") => Route::Metrics,
            _ => Route::Unmatched,
        }
    }
}

/// The daemon's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    requests: Arc<RequestCounts>,
    refreshes: Family<RefreshLabels, Counter>,
    sts_calls: Family<OperationLabels, Histogram>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics that read the roles from `store`, the TOTP budget from
    /// `ledger` and the clock offset from `clock` at each scrape.
    pub fn new(store: Arc<Store>, ledger: CurrentLedger, clock: Arc<StsClock>) -> Metrics {
        let mut registry = Registry::default();
        let refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "assumed_refreshes",
            "Finished refresh attempts by role and outcome, with the failure class",
            refreshes.clone(),
        );
        let sts_calls = Family::<OperationLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(STS_LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "assumed_sts_request_duration_seconds",
            "STS call latency by operation, failed calls included",
            sts_calls.clone(),
        );
        let requests = Arc::new(RequestCounts::default());
        registry.register_collector(Box::new(requests.clone()));
        registry.register_collector(Box::new(StateCollector {
            store,
            ledger,
            clock,
        }));
        Metrics {
            registry,
            requests,
            refreshes,
            sts_calls,
        }
    }

    /// Counts an answered request.
    pub fn record_request(&self, listener: Listener, route: Route, status: u16) {
        self.requests.record(listener, route, status);
    }

    /// Counts a finished refresh attempt: `None` for success, else the failure's class.
    pub fn record_refresh(&self, role: &RoleName, failure: Option<FailureClass>) {
        let labels = RefreshLabels {
            role: role.as_str().to_owned(),
            class: failure.map(FailureClass::name),
        };
        self.refreshes.get_or_create(&labels).inc();
    }

    /// Records how long an STS call took.
    pub fn record_sts_call(&self, operation: &str, took: Duration) {
        let labels = OperationLabels {
            operation: operation.to_owned(),
        };
        self.sts_calls
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text of every metric, as of now.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(4096);
        // Writing into a String cannot fail; the encoders only pass on
        // the writer's errors.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RefreshLabels {
    role: String,
    /// The failure's class; `None` for a success.
    class: Option<&'static str>,
}

impl EncodeLabelSet for RefreshLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        let outcome = if self.class.is_some() {
            "failure"
        } else {
            "success"
        };
        ("role", self.role.as_str()).encode(encoder.encode_label())?;
        ("outcome", outcome).encode(encoder.encode_label())?;
        if let Some(class) = self.class {
            ("class", class).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

/// Requests by listener, route and status: one atomic per combination.
#[derive(Debug)]
struct RequestCounts {
    table: Box<[AtomicU64]>,
    /// Statuses outside 100–599, which nothing here answers with.
    unusual: Mutex<BTreeMap<(Listener, Route, u16), u64>>,
}

impl Default for RequestCounts {
    fn default() -> RequestCounts {
        let slots = Listener::ALL.len() * Route::ALL.len() * STATUS_SLOTS;
        RequestCounts {
            table: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            unusual: Mutex::new(BTreeMap::new()),
        }
    }
}

impl RequestCounts {
    fn index(listener: Listener, route: Route, status_slot: usize) -> usize {
        (listener as usize * Route::ALL.len() + route as usize) * STATUS_SLOTS + status_slot
    }

    fn record(&self, listener: Listener, route: Route, status: u16) {
        let slot = usize::from(status.wrapping_sub(FIRST_STATUS));
        if slot < STATUS_SLOTS {
            self.table[Self::index(listener, route, slot)].fetch_add(1, Ordering::Relaxed);
        } else {
            let mut unusual = self.unusual.lock().unwrap_or_else(|e| e.into_inner());
            *unusual.entry((listener, route, status)).or_default() += 1;
        }
    }

    /// Every non-zero count, in label order.
    fn counts(&self) -> Vec<(Listener, Route, u16, u64)> {
        let mut counts = Vec::new();
        for listener in Listener::ALL {
            for route in Route::ALL {
                for slot in 0..STATUS_SLOTS {
                    let count =
                        self.table[Self::index(listener, route, slot)].load(Ordering::Relaxed);
                    if count > 0 {
                        counts.push((listener, route, FIRST_STATUS + slot as u16, count));
                    }
                }
            }
        }
        let unusual = self.unusual.lock().unwrap_or_else(|e| e.into_inner());
        counts.extend(unusual.iter().map(|(&(l, r, s), &n)| (l, r, s, n)));
        counts
    }
}

#[derive(prometheus_client::encoding::EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    path: &'static str,
    status: u16,
}

impl Collector for RequestCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            "assumed_http_requests",
            "Requests answered, by listener, route template and status.",
            None,
            MetricType::Counter,
        )?;
        for (listener, route, status, count) in self.counts() {
            let labels = RequestLabels {
                listener: listener.name(),
                path: route.template(),
                status,
            };
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// What is read from the daemon's state at each scrape.
#[derive(Debug)]
struct StateCollector {
    store: Arc<Store>,
    ledger: CurrentLedger,
    clock: Arc<StsClock>,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let now = self.clock.host_now();
        let table = self.store.table();

        let mut expiry = encoder.encode_descriptor(
            "assumed_credential_expiry_seconds",
            "Seconds until the role's held credential expires.",
            None,
            MetricType::Gauge,
        )?;
        for (name, slot) in &table.roles {
            if let Some(credential) = slot.held() {
                let seconds = seconds_between(now, credential.expiration);
                ConstGauge::new(seconds)
                    .encode(expiry.encode_family(&[("role", name.as_str())])?)?;
            }
        }

        let mut usable = encoder.encode_descriptor(
            "assumed_role_usable",
            "1 while the role holds a credential that may be served, else 0.",
            None,
            MetricType::Gauge,
        )?;
        for (name, slot) in &table.roles {
            let value = i64::from(slot.usable(now).is_some());
            ConstGauge::new(value).encode(usable.encode_family(&[("role", name.as_str())])?)?;
        }

        let stats = self.ledger.load().stats();
        single(
            &mut encoder,
            "assumed_totp_codes_used",
            "TOTP codes handed out since start.",
            ConstCounter::new(stats.codes_issued),
        )?;
        single(
            &mut encoder,
            "assumed_mfa_verifications_current_window",
            "MFA codes used in the current fixed 3-minute window.",
            ConstGauge::new(i64::from(stats.issued_this_window)),
        )?;
        single(
            &mut encoder,
            "assumed_mfa_verifications_window_limit",
            "The most MFA codes the daemon uses in one 3-minute window.",
            ConstGauge::new(i64::from(BUDGET_PER_WINDOW)),
        )?;
        if let Some(offset_ms) = self.clock.offset_ms() {
            single(
                &mut encoder,
                "assumed_sts_clock_offset_seconds",
                "STS's clock minus the host's, learned from STS's Date headers.",
                ConstGauge::new(offset_ms as f64 / 1000.0),
            )?;
        }

        let mut build = encoder.encode_descriptor(
            "assumed_build_info",
            "The running version; always 1.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64)
            .encode(build.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)
    }
}

/// A metric with one unlabelled sample.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeMetric,
) -> fmt::Result {
    value.encode(encoder.encode_descriptor(name, help, None, value.metric_type())?)
}

/// `to − from` in seconds, negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    }
}

/// A tower layer that counts every answered request in [`Metrics`].
/// Requests without a [`Peer`] (none come through the listeners) are not counted.
#[derive(Clone, Debug)]
pub struct CountRequestsLayer {
    metrics: Arc<Metrics>,
}

impl CountRequestsLayer {
    pub fn new(metrics: Arc<Metrics>) -> CountRequestsLayer {
        CountRequestsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> CountRequests<S> {
        CountRequests {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CountRequests<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<axum::http::Request<B>> for CountRequests<S>
where
    S: tower::Service<axum::http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Counted<S::Future> {
        let listener = match request.extensions().get::<Peer>() {
            Some(Peer::Tcp { .. }) => Some(Listener::Tcp),
            Some(Peer::Unix { .. }) => Some(Listener::Unix),
            None => None,
        };
        let route = Route::from_template(
            request
                .extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str),
        );
        Counted {
            count: listener.map(|listener| (self.metrics.clone(), listener, route)),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; counts the answer's status when it is ready.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        count: Option<(Arc<Metrics>, Listener, Route)>,
    }
}

impl<F, E> Future for Counted<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some((metrics, listener, route))) = (&result, this.count.take()) {
            metrics.record_request(listener, route, response.status().as_u16());
        }
        Poll::Ready(result)
    }
}

/// An STS client interceptor that times each operation, from before the
/// request is built to after the answer is read, failures included.
#[derive(Debug)]
pub struct StsCallTimer {
    metrics: Arc<Metrics>,
}

impl StsCallTimer {
    pub fn new(metrics: Arc<Metrics>) -> StsCallTimer {
        StsCallTimer { metrics }
    }
}

#[derive(Clone, Debug)]
struct CallStarted(Instant);

impl Storable for CallStarted {
    type Storer = StoreReplace<CallStarted>;
}

impl Intercept for StsCallTimer {
    fn name(&self) -> &'static str {
        "StsCallTimer"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(CallStarted(Instant::now()));
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let (Some(started), Some(metadata)) = (cfg.load::<CallStarted>(), cfg.load::<Metadata>())
        {
            self.metrics
                .record_sts_call(metadata.name(), started.0.elapsed());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_listener_route_and_status_is_counted_in_its_own_slot() {
        let counts = RequestCounts::default();
        counts.record(Listener::Tcp, Route::NamedCredentials, 200);
        counts.record(Listener::Tcp, Route::NamedCredentials, 200);
        counts.record(Listener::Unix, Route::NamedCredentials, 200);
        counts.record(Listener::Tcp, Route::Unmatched, 404);
        counts.record(Listener::Unix, Route::Metrics, 100);
        counts.record(Listener::Tcp, Route::Health, 599);
        counts.record(Listener::Tcp, Route::Health, 799);
        assert_eq!(
            counts.counts(),
            vec![
                (Listener::Unix, Route::NamedCredentials, 200, 1),
                (Listener::Unix, Route::Metrics, 100, 1),
                (Listener::Tcp, Route::NamedCredentials, 200, 2),
                (Listener::Tcp, Route::Health, 599, 1),
                (Listener::Tcp, Route::Unmatched, 404, 1),
                (Listener::Tcp, Route::Health, 799, 1),
            ]
        );
    }

    #[test]
    fn only_the_routers_templates_are_labels_and_anything_else_is_unmatched() {
        for route in Route::ALL {
            assert_eq!(Route::from_template(Some(route.template())), route);
        }
        assert_eq!(
            Route::from_template(Some("/v1/credentials/duper")),
            Route::Unmatched
        );
        assert_eq!(Route::from_template(None), Route::Unmatched);
    }

    #[test]
    fn a_time_before_now_gives_negative_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(seconds_between(now, now + Duration::from_secs(90)), 90.0);
        assert_eq!(
            seconds_between(now, now - Duration::from_millis(1500)),
            -1.5
        );
    }
}
