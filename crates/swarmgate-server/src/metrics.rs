//! Prometheus metrics. One process-wide recorder (the `metrics` facade is
//! global); `render` adds the gauges read at scrape time.

use std::cell::RefCell;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use swarmgate_gateway::Gateway;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// How often histogram samples are folded into their buckets. The
/// recorder keeps every raw sample until then (`build_recorder` runs no
/// upkeep of its own): without this, a server nobody scrapes would grow
/// without bound, and each request would write to fresh memory.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds pending histogram samples into their buckets; see [`UPKEEP_EVERY`].
pub fn upkeep() {
    handle().run_upkeep();
}

/// Installs the recorder on first use and returns its handle.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        "swarmgate_http_requests_total",
        "HTTP requests by route, method and status"
    );
    metrics::describe_histogram!(
        "swarmgate_http_request_duration_seconds",
        "Time to the response head, by route"
    );
    metrics::describe_histogram!(
        "swarmgate_gateway_overhead_seconds",
        "Proxied requests: total time to the response head minus the upstream's"
    );
    metrics::describe_counter!(
        "swarmgate_auth_total",
        "Authentications by method and outcome"
    );
    metrics::describe_counter!(
        "swarmgate_permission_denied_total",
        "Refusals of the decision point, by the kind of action refused"
    );
    metrics::describe_counter!(
        "swarmgate_llm_tokens_total",
        "LLM tokens by model and kind (prompt, completion)"
    );
    metrics::describe_gauge!(
        "swarmgate_upstream_healthy",
        "1 when an upstream is in rotation, 0 when ejected"
    );
}

/// Per-request series are looked up once per worker thread and kept:
/// the facade's macros hash and compare every label (and copy owned ones)
/// on each call, which was a measurable share of a proxied request. The
/// labels are bounded as the series themselves are (configured routes,
/// matched API paths, eight method names, status codes 100-999).
struct RouteSeries {
    duration: metrics::Histogram,
    requests: rustc_hash::FxHashMap<(&'static str, u16), metrics::Counter>,
}

impl RouteSeries {
    fn new(route: &str) -> Self {
        Self {
            duration: metrics::histogram!(
                "swarmgate_http_request_duration_seconds",
                "route" => route.to_string()
            ),
            requests: Default::default(),
        }
    }

    fn record(&mut self, route: &str, method: &'static str, status: u16, seconds: f64) {
        self.duration.record(seconds);
        self.requests
            .entry((method, status))
            .or_insert_with(|| {
                metrics::counter!(
                    "swarmgate_http_requests_total",
                    "route" => route.to_string(),
                    "method" => method,
                    "status" => status.to_string()
                )
            })
            .increment(1);
    }
}

thread_local! {
    static ROUTES: RefCell<rustc_hash::FxHashMap<Box<str>, RouteSeries>> = RefCell::default();
}

/// `swarmgate_http_requests_total` and `swarmgate_http_request_duration_seconds`.
pub fn record_http(route: &str, method: &'static str, status: u16, seconds: f64) {
    ROUTES.with_borrow_mut(|routes| match routes.get_mut(route) {
        Some(series) => series.record(route, method, status, seconds),
        None => {
            let mut series = RouteSeries::new(route);
            series.record(route, method, status, seconds);
            routes.insert(route.into(), series);
        }
    });
}

/// The text exposition, with upstream health sampled now.
pub fn render(gateway: &Gateway, now_ms: i64) -> String {
    let now = now_ms;
    for route in gateway.routes().routes() {
        for upstream in &route.upstreams.upstreams {
            metrics::gauge!("swarmgate_upstream_healthy", "route" => route.name.clone(), "upstream" => upstream.base.to_string())
                .set(if upstream.healthy(now) { 1.0 } else { 0.0 });
        }
    }
    for model in gateway.models().iter() {
        for upstream in &model.upstreams.upstreams {
            metrics::gauge!("swarmgate_upstream_healthy", "route" => format!("model:{}", model.name), "upstream" => upstream.base.to_string())
                .set(if upstream.healthy(now) { 1.0 } else { 0.0 });
        }
    }
    handle().render()
}
