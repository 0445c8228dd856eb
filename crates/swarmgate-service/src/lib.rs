//! swarmgate's domain services, with no HTTP in them: identity and
//! sessions, API keys, OAuth clients and node identities, agent sessions,
//! the quota coordinator, usage, the node registry and monitoring, and
//! the one decision point every "may this caller do this?" goes through
//! ([`authz::Authz::authorize`]).
//!
//! Services take and return domain types; the server turns HTTP into calls
//! here and the answers back into HTTP. Time comes from the [`Clock`] the
//! services are given, never from the system clock directly.

pub mod agents;
pub mod audit;
pub mod authz;
mod background;
pub mod clients;
pub mod clock;
pub mod error;
pub mod fetch;
pub mod identity;
pub mod ids;
pub mod monitoring;
pub mod nodes;
pub mod page;
pub mod principal;
pub mod quota;
pub mod settings;
pub mod telemetry;
pub mod usage;

use std::sync::Arc;

use swarmgate_state::SharedState;
use swarmgate_store::Store;

pub use background::Background;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use error::{Error, Result};
pub use principal::{AuthMethod, Credential, Presented, Principal, RequestMeta};
pub use settings::{QuotaSettings, Secret, Settings};

/// Every service of one instance, built on one store, one shared state and
/// one clock.
pub struct Services {
    pub settings: Arc<Settings>,
    pub clock: SharedClock,
    pub authz: Arc<authz::Authz>,
    pub identity: Arc<identity::Identity>,
    pub quota: Arc<quota::Quota>,
    pub agents: Arc<agents::Agents>,
    pub nodes: Arc<nodes::Nodes>,
    pub usage: Arc<usage::Usage>,
}

/// Why the services could not start: what is down or misconfigured.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DATABASE_URL: {0}")]
    Database(swarmgate_store::StoreError),
    #[error("REDIS_URL: {0}")]
    Redis(swarmgate_state::StateError),
    #[error(transparent)]
    Service(#[from] Error),
}

impl Services {
    /// Connects the store (migrating it) and the shared state, and builds
    /// every service on them.
    pub async fn start(
        settings: Arc<Settings>,
        clock: SharedClock,
        fetch: Arc<dyn fetch::Fetch>,
    ) -> Result<Self, StartError> {
        let store = Store::connect_within(&settings.database_url, settings.database_timeout)
            .await
            .map_err(StartError::Database)?;
        let state = match &settings.redis_url {
            None => SharedState::memory(),
            Some(url) => SharedState::redis(url, &settings.redis_namespace, settings.redis_timeout)
                .await
                .map_err(StartError::Redis)?,
        };
        Ok(Self::on(store, state, settings, clock, fetch).await?)
    }

    /// Builds every service on a connected store and shared state.
    async fn on(
        store: Store,
        state: SharedState,
        settings: Arc<Settings>,
        clock: SharedClock,
        fetch: Arc<dyn fetch::Fetch>,
    ) -> Result<Self> {
        let authz = Arc::new(authz::Authz::new(audit::Audit::new(
            store.clone(),
            clock.clone(),
        )));
        let quota = Arc::new(quota::Quota::new(
            state.clone(),
            settings.quota.clone(),
            settings.profiles.clone(),
            clock.clone(),
        ));
        let identity = Arc::new(
            identity::Identity::new(identity::Parts {
                store: store.clone(),
                state: state.clone(),
                settings: settings.clone(),
                clock: clock.clone(),
                authz: authz.clone(),
                fetch,
            })
            .await?,
        );
        let agents = Arc::new(agents::Agents::new(identity.clone(), quota.clone()));
        let nodes = nodes::Nodes::new(
            store.clone(),
            authz.clone(),
            clock.clone(),
            settings.node_stale_after,
        );
        let usage = Arc::new(usage::Usage::new(store, authz.clone(), clock.clone()));
        Ok(Self {
            settings,
            clock,
            authz,
            identity,
            quota,
            agents,
            nodes,
            usage,
        })
    }

    /// Creates the first admin on an empty database; returns the generated
    /// password when none was configured, for the caller to show once.
    pub async fn bootstrap(&self) -> Result<Option<String>> {
        self.identity.bootstrap_admin().await
    }

    /// Writes what is batched in memory (usage, `last_used_at`, denial
    /// counts); called at shutdown so nothing is lost.
    pub async fn flush(&self) {
        self.usage.flush().await;
        self.identity.flush().await;
    }
}
