//! The access-token signer/verifier of this instance, reloaded from the
//! database so that a key rotated by any instance (or by `swarmgate keys
//! rotate`) is picked up by all of them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use swarmgate_store::Store;
use swarmgate_tokens::{generate_ed25519, AccessTokens, Algorithm, KeyRing, LEEWAY_SECS};

use crate::clock::SharedClock;
use crate::error::Result;
use crate::settings::Settings;

/// An unknown `kid` triggers a reload at most this often, so garbage tokens
/// cannot turn into a flood of database reads.
const MIN_RELOAD_GAP_MS: i64 = 5_000;

pub struct KeyCache {
    store: Store,
    issuer: String,
    audience: String,
    keep_retired_secs: i64,
    activation_delay_secs: i64,
    current: RwLock<Arc<AccessTokens>>,
    /// Unix ms of the last reload.
    last_reload: AtomicI64,
    clock: SharedClock,
}

impl KeyCache {
    /// Loads (or, on an empty database, creates) the signing keys.
    pub async fn load(store: Store, settings: &Settings, clock: SharedClock) -> Result<Self> {
        let reload = i64::try_from(settings.key_reload.as_secs()).unwrap_or(i64::MAX);
        let activation_delay_secs = 2 * reload;
        let keep_retired_secs =
            settings.access_ttl_secs + LEEWAY_SECS as i64 + activation_delay_secs + 2 * reload;
        let ring = match (settings.algorithm, &settings.secret_key) {
            (Algorithm::HS256, Some(secret)) => KeyRing::hs256(secret.0.as_bytes()),
            _ => {
                if store
                    .signing_keys(Algorithm::EdDSA.as_str())
                    .await?
                    .is_empty()
                {
                    let key = generate_ed25519(clock.now_secs())?;
                    if store.add_first_signing_key(&key).await? {
                        tracing::info!(kid = %key.kid, "generated the first Ed25519 signing key");
                    }
                }
                Self::read_ring(
                    &store,
                    clock.now_secs(),
                    keep_retired_secs,
                    activation_delay_secs,
                )
                .await?
            }
        };
        let tokens =
            AccessTokens::new(ring, settings.public_url.clone(), settings.audience.clone());
        Ok(Self {
            store,
            issuer: settings.public_url.clone(),
            audience: settings.audience.clone(),
            keep_retired_secs,
            activation_delay_secs,
            current: RwLock::new(Arc::new(tokens)),
            last_reload: AtomicI64::new(clock.now_ms()),
            clock,
        })
    }

    async fn read_ring(
        store: &Store,
        now_secs: i64,
        keep_retired_secs: i64,
        activation_delay_secs: i64,
    ) -> Result<KeyRing> {
        let rows = store.signing_keys(Algorithm::EdDSA.as_str()).await?;
        Ok(KeyRing::ed25519(
            &rows,
            now_secs,
            keep_retired_secs,
            activation_delay_secs,
        )?)
    }

    pub fn current(&self) -> Arc<AccessTokens> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads Ed25519 keys; a no-op for HS256.
    pub async fn reload(&self) -> Result<()> {
        if self.current().keys().algorithm() != Algorithm::EdDSA {
            return Ok(());
        }
        self.last_reload
            .store(self.clock.now_ms(), Ordering::Relaxed);
        let ring = Self::read_ring(
            &self.store,
            self.clock.now_secs(),
            self.keep_retired_secs,
            self.activation_delay_secs,
        )
        .await?;
        let tokens = AccessTokens::new(ring, self.issuer.clone(), self.audience.clone());
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
        Ok(())
    }

    /// Reloads when a token names a key we do not know, unless we reloaded
    /// very recently. Returns whether it reloaded.
    pub async fn reload_for_unknown_kid(&self) -> bool {
        let last = self.last_reload.load(Ordering::Relaxed);
        let due = crate::clock::due(self.clock.now_ms(), last, MIN_RELOAD_GAP_MS);
        due && self.reload().await.is_ok()
    }
}
