//! The work that runs beside the requests: signing-key reloads, the
//! revocation poller, the metrics collector, usage flushes and the agent
//! sweep.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::Services;

/// The running background tasks; [`Background::stop`] ends them.
pub struct Background(Vec<JoinHandle<()>>);

impl Background {
    /// Adds a task of the caller's, stopped with the rest.
    pub fn push(&mut self, task: JoinHandle<()>) {
        self.0.push(task);
    }

    pub fn stop(self) {
        for task in self.0 {
            task.abort();
        }
    }
}

impl Services {
    /// Starts the background work on the current runtime.
    pub async fn start_background(&self) -> Background {
        let reloader = {
            let identity = self.identity.clone();
            let every = self.settings.key_reload;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = identity.keys().reload().await {
                        tracing::warn!(error = %e, "signing key reload failed");
                    }
                }
            })
        };
        let poller = tokio::spawn(self.identity.clone().revocation_poller());
        let monitor =
            crate::monitoring::start(self.settings.metrics_interval, self.clock.clone()).await;
        let usage_flusher = {
            let usage = self.usage.clone();
            let every = self.settings.usage_flush;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    usage.flush().await;
                }
            })
        };
        let agent_sweeper = {
            let agents = self.agents.clone();
            // Often enough that an idle session is released within a few
            // seconds of its deadline (its token stops at the deadline
            // itself; this gives the allocation back).
            let every = (self.settings.quota.agent_idle / 4)
                .clamp(Duration::from_millis(500), Duration::from_secs(30));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if let Err(e) = agents.sweep().await {
                        tracing::warn!(error = %e, "agent session sweep failed");
                    }
                }
            })
        };
        Background(vec![
            reloader,
            poller,
            monitor,
            usage_flusher,
            agent_sweeper,
        ])
    }
}
