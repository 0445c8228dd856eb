//! Refusals of the decision point: counted, and written to the audit trail
//! aggregated per minute, so a flood of denials cannot fill the disk. Each
//! minute yields at most one row per (subject, kind, what was asked) with
//! its count, for at most `MAX_DISTINCT` triples; denials beyond that are
//! summed into a single overflow row.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::json;

use crate::audit::{Audit, Subject};
use crate::principal::RequestMeta;

const MAX_DISTINCT: usize = 1000;
const WINDOW_SECS: u64 = 60;
/// How often the aggregated rows are written.
pub const WINDOW_MS: i64 = WINDOW_SECS as i64 * 1000;

/// (subject, kind of action, what was asked)
type Key = (String, &'static str, String);

#[derive(Default)]
pub(super) struct Denials {
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    counts: HashMap<Key, u64>,
    overflow: u64,
}

impl Denials {
    pub(super) fn record(&self, subject: &str, kind: &'static str, what: &str) {
        metrics::counter!("swarmgate_permission_denied_total", "action" => kind).increment(1);
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let key = (subject.to_string(), kind, what.to_string());
        if let Some(n) = window.counts.get_mut(&key) {
            *n += 1;
        } else if window.counts.len() < MAX_DISTINCT {
            window.counts.insert(key, 1);
        } else {
            window.overflow += 1;
        }
    }

    /// Writes the aggregated rows of the window that just ended.
    pub(super) async fn flush(&self, audit: &Audit) {
        let window = std::mem::take(&mut *self.window.lock().unwrap_or_else(|p| p.into_inner()));
        let meta = RequestMeta::default();
        for ((subject, kind, what), count) in window.counts {
            audit
                .record(
                    "permission_denied",
                    "denied",
                    Subject::id(&subject),
                    &meta,
                    json!({ "action": kind, "permission": what, "count": count, "window_seconds": WINDOW_SECS }),
                )
                .await;
        }
        if window.overflow > 0 {
            audit
                .record(
                    "permission_denied_overflow",
                    "denied",
                    Subject::default(),
                    &meta,
                    json!({ "count": window.overflow, "window_seconds": WINDOW_SECS }),
                )
                .await;
        }
    }
}
