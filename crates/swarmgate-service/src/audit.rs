//! The audit trail: every security event goes to the append-only table and
//! to the structured log (target `audit`). Callers pass only non-secret
//! fields; there is no parameter a password or token could ride in on.

use serde_json::Value;
use swarmgate_core::AuditEvent;
use swarmgate_store::Store;

use crate::clock::now_secs;
use crate::identity::RequestMeta;

#[derive(Clone)]
pub struct Audit {
    store: Store,
}

/// Who an event is about.
#[derive(Default)]
pub struct Subject<'a> {
    pub user_id: Option<&'a str>,
    pub username: Option<&'a str>,
}

impl<'a> Subject<'a> {
    /// The subject for an event about `user`.
    pub fn of(user: &'a swarmgate_core::User) -> Self {
        Self {
            user_id: Some(&user.id),
            username: Some(&user.username),
        }
    }
}

impl Audit {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn record(
        &self,
        event: &str,
        outcome: &str,
        subject: Subject<'_>,
        meta: &RequestMeta,
        detail: Value,
    ) {
        let row = AuditEvent {
            at: now_secs(),
            event: event.to_string(),
            user_id: subject.user_id.map(str::to_string),
            username: subject.username.map(str::to_string),
            client_ip: meta.client_ip.clone(),
            request_id: meta.request_id.clone(),
            outcome: outcome.to_string(),
            detail,
        };
        tracing::info!(
            target: "audit",
            event = %row.event,
            outcome = %row.outcome,
            user_id = row.user_id.as_deref().unwrap_or(""),
            username = row.username.as_deref().unwrap_or(""),
            client_ip = row.client_ip.as_deref().unwrap_or(""),
            request_id = row.request_id.as_deref().unwrap_or(""),
            detail = %row.detail,
            "audit"
        );
        // The request has already been decided; an audit write that fails
        // is logged loudly rather than turning the answer into a 500.
        if let Err(e) = self.store.append_audit(&row).await {
            tracing::error!(event = %row.event, error = %e, "audit write failed");
        }
    }
}
