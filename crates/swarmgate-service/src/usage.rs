//! Usage of LLM calls, collected in memory as responses finish and written
//! in batches (every `[usage] flush_interval_ms`, and at shutdown), so no
//! call waits for a database write and none is lost on a graceful stop.

use std::sync::Mutex;

use swarmgate_store::{Store, UsageRecord};

/// Records kept while the database cannot take them.
const MAX_PENDING: usize = 1_000_000;

pub struct UsageRecorder {
    store: Store,
    pending: Mutex<Vec<UsageRecord>>,
}

impl UsageRecorder {
    pub fn new(store: Store) -> Self {
        Self {
            store,
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

    pub fn store(&self) -> &Store {
        &self.store
    }
}
