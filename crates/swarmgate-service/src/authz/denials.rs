//! Denied permission checks: counted, and written to the audit trail
//! aggregated per minute, so a flood of denials cannot fill the disk. Each
//! minute yields at most one row per (subject, permission) with its count,
//! for at most `MAX_DISTINCT` pairs; denials beyond that are summed into a
//! single overflow row.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::json;

use super::audit::Subject;
use super::{Identity, RequestMeta};

pub const MAX_DISTINCT: usize = 1000;
pub const WINDOW_SECS: u64 = 60;

#[derive(Default)]
pub(super) struct Denials {
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    counts: HashMap<(String, String), u64>,
    overflow: u64,
}

impl Denials {
    pub(super) fn record(&self, subject: &str, permission: &str) {
        metrics::counter!("swarmgate_permission_denied_total").increment(1);
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let key = (subject.to_string(), permission.to_string());
        if let Some(n) = window.counts.get_mut(&key) {
            *n += 1;
        } else if window.counts.len() < MAX_DISTINCT {
            window.counts.insert(key, 1);
        } else {
            window.overflow += 1;
        }
    }

    fn take(&self) -> Window {
        std::mem::take(&mut *self.window.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Identity {
    pub(super) fn record_denial(&self, subject: &str, permission: &str) {
        self.denials.record(subject, permission);
    }

    /// Writes the aggregated rows of the window that just ended.
    pub async fn flush_denials(&self) {
        let window = self.denials.take();
        let meta = RequestMeta::default();
        for ((subject, permission), count) in window.counts {
            self.audit
                .record(
                    "permission_denied",
                    "denied",
                    Subject {
                        user_id: Some(&subject),
                        username: None,
                    },
                    &meta,
                    json!({ "permission": permission, "count": count, "window_seconds": WINDOW_SECS }),
                )
                .await;
        }
        if window.overflow > 0 {
            self.audit
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
