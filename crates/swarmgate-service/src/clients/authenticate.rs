//! Client authentication at the token, introspection and revocation
//! endpoints: a secret (Basic or form) compared in constant time, or a
//! private key JWT (RFC 7523) verified against the client's registered or
//! fetched key set, each assertion good for one use.

use std::sync::Arc;

use serde_json::Value;
use subtle::ConstantTimeEq;
use swarmgate_core::OAuthClient;
use swarmgate_tokens::{ClientAssertionError, ClientKeys};

use super::{hash_secret, ClientAuth, JWKS_MAX_BYTES, PRIVATE_KEY_JWT};
use crate::error::{Error, Result};
use crate::identity::Identity;

impl Identity {
    /// The URLs an assertion may name as its audience: the issuer and each
    /// endpoint that accepts client authentication.
    fn assertion_audiences(&self) -> Vec<String> {
        let base = self.settings.public_url.trim_end_matches('/');
        let mut audiences = vec![base.to_string(), format!("{base}/")];
        for path in [
            "/auth/token",
            "/api/auth/token",
            "/auth/introspect",
            "/auth/revoke",
        ] {
            audiences.push(format!("{base}{path}"));
        }
        audiences
    }

    /// Authenticates the client of a token-endpoint request; `Ok(None)`
    /// when the request names no client at all.
    pub async fn authenticate_client(&self, auth: &ClientAuth) -> Result<Option<OAuthClient>> {
        let fail = |why: &str| Error::InvalidClient(why.to_string());
        let result = match auth {
            ClientAuth::None => return Ok(None),
            ClientAuth::Secret {
                client_id,
                secret,
                method,
            } => {
                let client = self
                    .store
                    .client(client_id)
                    .await?
                    .ok_or_else(|| fail("unknown client"))?;
                let matches = client.secret_hash.as_deref().is_some_and(|stored| {
                    bool::from(stored.as_bytes().ct_eq(hash_secret(secret).as_bytes()))
                });
                if !matches {
                    Err(fail("wrong client secret"))
                } else if client.auth_method != *method {
                    Err(fail(&format!(
                        "this client authenticates with {}",
                        client.auth_method
                    )))
                } else {
                    Ok(client)
                }
            }
            ClientAuth::Jwt {
                client_id,
                assertion,
            } => {
                self.authenticate_assertion(client_id.as_deref(), assertion)
                    .await
            }
        };
        let outcome = if result.is_ok() { "success" } else { "failure" };
        crate::telemetry::record_auth("client", outcome);
        result.map(Some)
    }

    async fn authenticate_assertion(
        &self,
        form_client_id: Option<&str>,
        assertion: &str,
    ) -> Result<OAuthClient> {
        let fail = |why: String| Error::InvalidClient(why);
        let peeked = swarmgate_tokens::peek_claims(assertion).map_err(|e| fail(e.to_string()))?;
        let client_id = peeked
            .sub
            .clone()
            .or(peeked.iss.clone())
            .ok_or_else(|| fail("client assertion names no client (sub)".into()))?;
        if form_client_id.is_some_and(|id| id != client_id) {
            return Err(fail("client_id does not match the client assertion".into()));
        }
        let client = self
            .store
            .client(&client_id)
            .await?
            .ok_or_else(|| fail("unknown client".into()))?;
        if client.auth_method != PRIVATE_KEY_JWT {
            return Err(fail(format!(
                "this client authenticates with {}",
                client.auth_method
            )));
        }
        let now = self.clock.now_secs();
        let audiences = self.assertion_audiences();
        let keys = self.client_keys(&client, false).await?;
        let verified = match swarmgate_tokens::verify_client_assertion(
            assertion, &keys, &client.id, &audiences, now,
        ) {
            // The client may have rotated its keys at its jwks_uri.
            Err(ClientAssertionError::Signature) if client.jwks_uri.is_some() => {
                let keys = self.client_keys(&client, true).await?;
                swarmgate_tokens::verify_client_assertion(
                    assertion, &keys, &client.id, &audiences, now,
                )
            }
            other => other,
        }
        .map_err(|e| fail(e.to_string()))?;
        // Each assertion is good for one use (RFC 7523 section 3, item 7).
        let until = (verified.exp + swarmgate_tokens::LEEWAY_SECS as i64) * 1000;
        let first = self
            .state
            .claim_once(
                &format!("jti:{}:{}", client.id, verified.jti),
                until,
                self.clock.now_ms(),
            )
            .await?;
        if !first {
            return Err(fail(
                "client assertion was already used (jti replayed)".into(),
            ));
        }
        Ok(client)
    }

    /// A client's public keys: registered inline, or fetched from its
    /// `jwks_uri` (cached; `refresh` fetches again, at most once a TTL
    /// would otherwise allow, so a flood of bad assertions cannot make us
    /// hammer the client's server).
    async fn client_keys(&self, client: &OAuthClient, refresh: bool) -> Result<Arc<ClientKeys>> {
        let fail = |why: String| Error::InvalidClient(why);
        if let Some(jwks) = &client.jwks {
            // Registered keys never change (a client is replaced, not
            // edited), so they are parsed once, not at every assertion.
            let cache_key = format!("inline:{}", client.id);
            if let Some(keys) = self.clients.jwks.get(&cache_key) {
                return Ok(keys);
            }
            let value: Value =
                serde_json::from_str(jwks).map_err(|e| Error::Internal(e.to_string()))?;
            let keys = ClientKeys::parse(&value)
                .map(Arc::new)
                .map_err(|e| Error::Internal(format!("stored jwks: {e}")))?;
            self.clients.jwks.insert(cache_key, keys.clone());
            return Ok(keys);
        }
        let uri = client
            .jwks_uri
            .as_deref()
            .ok_or_else(|| fail("client has no registered keys".into()))?;
        let refetch = refresh && {
            let guard = format!("jwks-refetch:{uri}");
            self.state
                .claim_once(&guard, self.clock.now_ms() + 30_000, self.clock.now_ms())
                .await
                .unwrap_or(false)
        };
        if !refetch {
            if let Some(keys) = self.clients.jwks.get(uri) {
                return Ok(keys);
            }
        }
        // A failing uri is not asked again for a while: a flood of
        // assertions must not become a flood of fetches.
        if self.clients.jwks_failed.contains_key(uri) {
            return Err(fail("the client's jwks_uri could not be fetched".into()));
        }
        match self.fetch_jwks(uri).await {
            Ok(keys) => {
                self.clients.jwks.insert(uri.to_string(), keys.clone());
                Ok(keys)
            }
            Err(e) => {
                // The reason stays in the log: echoing it would turn the
                // token endpoint into a probe of whatever the uri names.
                tracing::warn!(client_id = %client.id, jwks_uri = %uri, error = %e, "jwks_uri fetch failed");
                self.clients.jwks_failed.insert(uri.to_string(), ());
                match self.clients.jwks.get(uri) {
                    Some(previous) => Ok(previous),
                    None => Err(fail("the client's jwks_uri could not be fetched".into())),
                }
            }
        }
    }

    /// A client's key set from its `jwks_uri`, through the server's fetcher.
    async fn fetch_jwks(&self, uri: &str) -> Result<Arc<ClientKeys>, String> {
        let body = self.fetch.get(uri, JWKS_MAX_BYTES).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        ClientKeys::parse(&value)
            .map(Arc::new)
            .map_err(|e| format!("the key set {e}"))
    }
}
