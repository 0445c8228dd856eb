//! The client registry: registering (scopes never beyond the registering
//! caller's), listing and deleting OAuth2 clients, and the current copy of
//! a client that requests are checked against.

use std::sync::Arc;

use serde_json::json;
use swarmgate_core::permission::GrantSet;
use swarmgate_core::OAuthClient;
use swarmgate_tokens::ClientKeys;

use super::{
    hash_secret, invalid, CreatedClient, LiveClient, NewClient, AUTH_METHODS, GRANT_TYPES,
    PRIVATE_KEY_JWT, SECRET_PREFIX,
};
use crate::audit::Subject;
use crate::authz::{Action, Actor, Delegate, Resource};
use crate::error::{Error, Result};
use crate::identity::{Changed, Identity};
use crate::page::{at_id, Page, PageRequest};
use crate::principal::RequestMeta;

impl Identity {
    /// Registers a client. Its scopes may not exceed what the registering
    /// caller holds.
    pub async fn create_client(
        &self,
        actor: Actor<'_>,
        new: NewClient,
        meta: &RequestMeta,
    ) -> Result<CreatedClient> {
        self.authz.require(actor, "clients.manage").await?;
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(invalid(
                "name",
                "must be 1 to 100 characters without control characters",
            ));
        }
        if new.grant_types.is_empty()
            || new
                .grant_types
                .iter()
                .any(|g| !GRANT_TYPES.contains(&g.as_str()))
        {
            return Err(invalid(
                "grant_types",
                format!("must be a non-empty list of {}", GRANT_TYPES.join(", ")),
            ));
        }
        if new.scopes.is_empty() || new.scopes.len() > 100 {
            return Err(invalid("scopes", "must hold 1 to 100 permissions"));
        }
        let grants = GrantSet::parse(&new.scopes).map_err(|e| invalid("scopes", e.0))?;
        self.authz
            .authorize(
                actor,
                Action::Delegate(Delegate::Client),
                Resource::Grants(&grants),
            )
            .await
            .require()?;
        let method = new.token_endpoint_auth_method.as_str();
        if !AUTH_METHODS.contains(&method) {
            return Err(invalid(
                "token_endpoint_auth_method",
                format!("must be one of {}", AUTH_METHODS.join(", ")),
            ));
        }
        let (jwks, jwks_uri) = registered_keys(&new, method)?;
        let secret =
            (method != PRIVATE_KEY_JWT).then(|| swarmgate_tokens::new_opaque(SECRET_PREFIX).token);
        let now = self.clock.now_secs();
        let client = OAuthClient {
            id: swarmgate_core::random::uuid_string(),
            name: name.to_string(),
            owner_id: actor.user_id().unwrap_or("operator").to_string(),
            grant_types: new.grant_types,
            scopes: new.scopes,
            auth_method: method.to_string(),
            secret_hash: secret.as_deref().map(hash_secret),
            jwks,
            jwks_uri,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        self.store.create_client(&client).await?;
        self.audit
            .record(
                "client_created",
                "success",
                Subject {
                    user_id: actor.user_id(),
                    username: None,
                },
                meta,
                json!({ "client_id": client.id, "name": client.name, "scopes": client.scopes,
                        "auth_method": client.auth_method }),
            )
            .await;
        Ok(CreatedClient { client, secret })
    }

    /// Registered clients, oldest first.
    pub async fn list_clients(
        &self,
        actor: Actor<'_>,
        page: &PageRequest,
    ) -> Result<Page<OAuthClient>> {
        self.authz.require(actor, "clients.manage").await?;
        let size = page.size(100);
        let rows = self
            .store
            .list_clients(page.after_at_id()?, size + 1)
            .await?;
        Ok(Page::of(rows, size, |c| at_id(c.created_at, &c.id)))
    }

    /// Deletes a client; its tokens stop working on every instance at once.
    pub async fn delete_client(
        &self,
        actor: Actor<'_>,
        id: &str,
        meta: &RequestMeta,
    ) -> Result<()> {
        self.authz.require(actor, "clients.manage").await?;
        match self.store.delete_client(id, self.clock.now_secs()).await {
            Err(swarmgate_store::StoreError::NotFound) => return Err(Error::NotFound),
            other => other?,
        }
        self.publish_change_soon(Changed::Client(id)).await;
        self.audit
            .record(
                "client_deleted",
                "success",
                Subject {
                    user_id: actor.user_id(),
                    username: None,
                },
                meta,
                json!({ "client_id": id }),
            )
            .await;
        Ok(())
    }

    /// The client as of `version` (its version in the shared state), from
    /// the cache when it is that fresh; `None` when deleted.
    pub(crate) async fn current_client(
        &self,
        client_id: &str,
        version: i64,
    ) -> Result<Option<Arc<LiveClient>>> {
        if let Some(cached) = self.clients.inner.get(client_id) {
            if cached.0 == version {
                return Ok(cached.1.clone());
            }
        }
        let live = self.store.client(client_id).await?.map(|client| {
            let grants = Arc::new(GrantSet::parse(&client.scopes).unwrap_or_default());
            Arc::new(LiveClient { client, grants })
        });
        self.clients
            .inner
            .insert(client_id.to_string(), Arc::new((version, live.clone())));
        Ok(live)
    }
}

/// The keys a `private_key_jwt` client registers: exactly one of an inline
/// key set or a `jwks_uri`; the secret methods register none.
fn registered_keys(new: &NewClient, method: &str) -> Result<(Option<String>, Option<String>)> {
    if method != PRIVATE_KEY_JWT {
        if new.jwks.is_some() || new.jwks_uri.is_some() {
            return Err(invalid(
                "jwks",
                "only a private_key_jwt client registers keys",
            ));
        }
        return Ok((None, None));
    }
    match (&new.jwks, &new.jwks_uri) {
        (Some(jwks), None) => {
            ClientKeys::parse(jwks).map_err(|e| invalid("jwks", e))?;
            Ok((Some(jwks.to_string()), None))
        }
        (None, Some(uri)) => {
            // Plain http would let anyone on the path swap in their own
            // keys; it is allowed only to this machine (tests, a sidecar).
            let parsed = url::Url::parse(uri).ok().filter(|u| {
                uri.len() <= 2048
                    && (u.scheme() == "https"
                        || (u.scheme() == "http"
                            && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))))
            });
            if parsed.is_none() {
                return Err(invalid(
                    "jwks_uri",
                    "must be an https URL (http only to localhost)",
                ));
            }
            Ok((None, Some(uri.clone())))
        }
        _ => Err(invalid(
            "jwks",
            "private_key_jwt needs exactly one of jwks or jwks_uri",
        )),
    }
}
