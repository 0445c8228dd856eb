//! The swarm's worker nodes (seed 004): registration, heartbeats, and the
//! metrics each reports, kept in the database so every instance (and a
//! restarted one) shows the same picture.
//!
//! A node speaks only for itself: a node token's `node_id`, or an OAuth2
//! client's id when the node authenticates as a client. An operator with
//! `nodes.manage` may act for any node.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use swarmgate_core::Node;
use swarmgate_store::Store;

use crate::clock::{now_secs, rfc3339};
use crate::error::{Error, Result};
use crate::identity::clients::validate_node_id;
use crate::identity::Principal;

pub struct Nodes {
    store: Store,
    stale_after: Duration,
}

/// What `POST /nodes/register` carries.
pub struct Registration {
    pub node_id: String,
    pub address: Option<String>,
    pub labels: Value,
}

impl Nodes {
    pub fn new(store: Store, stale_after: Duration) -> Arc<Self> {
        Arc::new(Self { store, stale_after })
    }

    /// Fails with 403 unless `principal` may act for `node_id` with
    /// `permission`.
    fn authorize(principal: &Principal, permission: &str, node_id: &str) -> Result<()> {
        validate_node_id(node_id)?;
        principal.require(permission)?;
        if principal.allows("nodes.manage", None) || principal.node_id() == Some(node_id) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "this token speaks for node {:?}, not {node_id:?}",
                principal.node_id().unwrap_or("(none)")
            )))
        }
    }

    pub async fn register(&self, principal: &Principal, r: Registration) -> Result<Value> {
        Self::authorize(principal, "nodes.register", &r.node_id)?;
        if let Some(address) = &r.address {
            if address.is_empty() || address.len() > 512 || address.chars().any(char::is_control) {
                return Err(swarmgate_core::ValidationError::new(
                    "address",
                    "must be 1 to 512 characters without control characters",
                )
                .into());
            }
        }
        // No labels at all is an empty set.
        let labels = if r.labels.is_null() {
            json!({})
        } else {
            r.labels
        };
        let labels_ok = labels
            .as_object()
            .is_some_and(|m| m.len() <= 64 && m.values().all(|v| v.is_string()));
        if !labels_ok {
            return Err(swarmgate_core::ValidationError::new(
                "labels",
                "must be an object of at most 64 string values",
            )
            .into());
        }
        let node = self
            .store
            .register_node(&r.node_id, r.address.as_deref(), &labels, now_secs())
            .await?;
        Ok(self.view(node, now_secs()))
    }

    pub async fn heartbeat(&self, principal: &Principal, node_id: &str) -> Result<()> {
        Self::authorize(principal, "nodes.heartbeat", node_id)?;
        Ok(self.store.node_heartbeat(node_id, now_secs()).await?)
    }

    pub async fn report(&self, principal: &Principal, node_id: &str, metrics: Value) -> Result<()> {
        Self::authorize(principal, "metrics.report", node_id)?;
        if !metrics.is_object() {
            return Err(
                swarmgate_core::ValidationError::new("metrics", "must be a JSON object").into(),
            );
        }
        Ok(self
            .store
            .record_node_report(node_id, &metrics, now_secs())
            .await?)
    }

    /// Every node with its last report (`nodes.manage`).
    pub async fn list(&self, principal: &Principal) -> Result<Vec<Value>> {
        principal.require("nodes.manage")?;
        let now = now_secs();
        Ok(self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| self.view(n, now))
            .collect())
    }

    /// A node as the API shows it; stale when its last report (or, never
    /// having reported, its last sign of life) is older than the threshold.
    fn view(&self, node: Node, now: i64) -> Value {
        let reference = node.last_report_at.unwrap_or(node.last_seen_at);
        let age = (now - reference).max(0);
        json!({
            "node_id": node.node_id,
            "address": node.address,
            "labels": node.labels,
            "registered_at": node.registered_at.map(rfc3339),
            "last_seen_at": rfc3339(node.last_seen_at),
            "last_report_at": node.last_report_at.map(rfc3339),
            "age_seconds": age,
            "stale": age as u64 > self.stale_after.as_secs(),
            "metrics": node.metrics,
        })
    }
}
