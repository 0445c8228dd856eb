//! The audit trail: every security event goes to the append-only table and
//! to the structured log (target `audit`). Callers pass only non-secret
//! fields; there is no parameter a password or token could ride in on.

use serde_json::Value;
use swarmgate_core::AuditEvent;
use swarmgate_store::Store;

use crate::clock::SharedClock;
use crate::principal::{Principal, RequestMeta};

#[derive(Clone)]
pub struct Audit {
    store: Store,
    clock: SharedClock,
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

    /// The subject for an event a caller caused: its user (or client, or
    /// node) id and name.
    pub fn principal(principal: &'a Principal) -> Self {
        Self {
            user_id: Some(&principal.user_id),
            username: Some(&principal.username),
        }
    }

    /// A subject known only by id.
    pub fn id(user_id: &'a str) -> Self {
        Self {
            user_id: Some(user_id),
            username: None,
        }
    }
}

impl Audit {
    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self { store, clock }
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
            at: self.clock.now_secs(),
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
