//! Counters the services emit through the `metrics` facade; the server
//! installs the Prometheus recorder that exports them.

use std::cell::RefCell;

thread_local! {
    static AUTH: RefCell<rustc_hash::FxHashMap<(&'static str, &'static str), metrics::Counter>> =
        RefCell::default();
}

/// `swarmgate_auth_total{method, outcome}`. Its series are looked up once
/// per thread and kept: the facade's macros hash every label on each call,
/// which was a measurable share of a proxied request.
pub fn record_auth(method: &'static str, outcome: &'static str) {
    AUTH.with_borrow_mut(|counters| {
        counters
            .entry((method, outcome))
            .or_insert_with(|| {
                metrics::counter!("swarmgate_auth_total", "method" => method, "outcome" => outcome)
            })
            .increment(1);
    });
}
