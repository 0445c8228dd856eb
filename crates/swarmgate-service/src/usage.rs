//! Usage of LLM calls: collected in memory as responses finish and written
//! in batches (every `[usage] flush_interval_ms`, and at shutdown), so no
//! call waits for a database write and none is lost on a graceful stop;
//! and read back summed by model, key or user.

use std::sync::{Arc, Mutex};

use swarmgate_store::{Store, UsageGroup, UsageRecord, UsageRow};

use crate::authz::Authz;
use crate::clock::SharedClock;
use crate::error::Result;
use crate::page::{Page, PageRequest};
use crate::principal::Principal;

/// Records kept while the database cannot take them.
const MAX_PENDING: usize = 1_000_000;

/// Which usage to sum.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    /// Unix seconds, inclusive; the beginning of time when absent.
    pub since: Option<i64>,
    /// Unix seconds, exclusive; now when absent.
    pub until: Option<i64>,
    pub group: UsageGroup,
}

pub struct Usage {
    store: Store,
    authz: Arc<Authz>,
    clock: SharedClock,
    pending: Mutex<Vec<UsageRecord>>,
}

impl Usage {
    pub fn new(store: Store, authz: Arc<Authz>, clock: SharedClock) -> Self {
        Self {
            store,
            authz,
            clock,
            pending: Mutex::new(Vec::new()),
        }
    }

    pub fn record(&self, record: UsageRecord) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= MAX_PENDING {
            // The database has been unreachable for long: keep memory
            // bounded and say so rather than grow without end.
            tracing::error!("usage records dropped: {MAX_PENDING} already wait for the database");
            return;
        }
        pending.push(record);
    }

    /// Writes what is pending; on failure keeps it for the next attempt.
    pub async fn flush(&self) {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.insert_usage(&batch).await {
            tracing::warn!(error = %e, records = batch.len(), "usage not written yet; will retry");
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let newer = std::mem::replace(&mut *pending, batch);
            pending.extend(newer);
        }
    }

    /// The caller's own usage summed by `query.group`, or everyone's with
    /// `usage.read.all`; groups in order, a page continuing after the last.
    pub async fn summary(
        &self,
        principal: &Principal,
        query: &UsageQuery,
        page: &PageRequest,
    ) -> Result<Page<UsageRow>> {
        let everyone = self.authz.holds(principal, "usage.read.all").await;
        // What this instance still holds in memory counts too.
        self.flush().await;
        let size = page.size(100);
        let rows = self
            .store
            .usage_summary(
                (!everyone).then_some(principal.user_id.as_str()),
                query.since.unwrap_or(0),
                query.until.unwrap_or(self.clock.now_secs() + 1),
                query.group,
                page.after.as_deref(),
                size + 1,
            )
            .await?;
        Ok(Page::of(rows, size, |r| {
            r.group.clone().unwrap_or_default()
        }))
    }
}
