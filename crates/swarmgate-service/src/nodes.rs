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

use crate::authz::{Action, Authz, Resource};
use crate::clients::validate_node_id;
use crate::clock::SharedClock;
use crate::error::Result;
use crate::page::{Page, PageRequest};
use crate::principal::Principal;

pub struct Nodes {
    store: Store,
    authz: Arc<Authz>,
    clock: SharedClock,
    stale_after: Duration,
}

/// What `POST /nodes/register` carries.
pub struct Registration {
    pub node_id: String,
    pub address: Option<String>,
    pub labels: Value,
}

/// A node as operators see it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub node: Node,
    /// Seconds since its last report (or, never having reported, its last
    /// sign of life).
    pub age_seconds: i64,
    /// Older than `[nodes] stale_after_seconds`.
    pub stale: bool,
}

impl Nodes {
    pub fn new(
        store: Store,
        authz: Arc<Authz>,
        clock: SharedClock,
        stale_after: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            authz,
            clock,
            stale_after,
        })
    }

    /// Fails with 403 unless `principal` may act for `node_id` with
    /// `permission`.
    async fn authorize(
        &self,
        principal: &Principal,
        permission: &str,
        node_id: &str,
    ) -> Result<()> {
        validate_node_id(node_id)?;
        self.authz
            .authorize(
                principal,
                Action::Permission(permission),
                Resource::Node(node_id),
            )
            .await
            .require()
    }

    pub async fn register(&self, principal: &Principal, r: Registration) -> Result<NodeView> {
        self.authorize(principal, "nodes.register", &r.node_id)
            .await?;
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
        let now = self.clock.now_secs();
        let node = self
            .store
            .register_node(&r.node_id, r.address.as_deref(), &labels, now)
            .await?;
        Ok(self.view(node, now))
    }

    pub async fn heartbeat(&self, principal: &Principal, node_id: &str) -> Result<()> {
        self.authorize(principal, "nodes.heartbeat", node_id)
            .await?;
        let now = self.clock.now_secs();
        Ok(self.store.node_heartbeat(node_id, now).await?)
    }

    pub async fn report(&self, principal: &Principal, node_id: &str, metrics: Value) -> Result<()> {
        self.authorize(principal, "metrics.report", node_id).await?;
        if !metrics.is_object() {
            return Err(
                swarmgate_core::ValidationError::new("metrics", "must be a JSON object").into(),
            );
        }
        let now = self.clock.now_secs();
        Ok(self
            .store
            .record_node_report(node_id, &metrics, now)
            .await?)
    }

    /// Every node with its last report (`nodes.manage`), by node id.
    pub async fn list(&self, principal: &Principal, page: &PageRequest) -> Result<Page<NodeView>> {
        self.authz.require(principal, "nodes.manage").await?;
        let now = self.clock.now_secs();
        let size = page.size(100);
        let rows = self
            .store
            .list_nodes(page.after.as_deref(), size + 1)
            .await?;
        Ok(Page::of(rows, size, |n| n.node_id.clone()).map(|n| self.view(n, now)))
    }

    fn view(&self, node: Node, now: i64) -> NodeView {
        let reference = node.last_report_at.unwrap_or(node.last_seen_at);
        let age = (now - reference).max(0);
        NodeView {
            node,
            age_seconds: age,
            stale: age.unsigned_abs() > self.stale_after.as_secs(),
        }
    }
}
