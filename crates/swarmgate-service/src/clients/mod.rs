//! Machine identities: OAuth2 clients (registration, client
//! authentication by secret or private key JWT, the `client_credentials`
//! grant), node tokens, and token introspection (RFC 7662) and revocation
//! (RFC 7009).
//!
//! A client token's `scope` is fixed at issue; what it may do at a request
//! is that scope and the client's scopes *now*, so narrowing or deleting a
//! client takes effect at once (its version in the shared state is bumped,
//! as a user's is).

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use swarmgate_core::permission::{Grant, GrantSet};
use swarmgate_core::roles::{Role, NODE_ROLE};
use swarmgate_core::{OAuthClient, ValidationError};
use swarmgate_state::Revocable;
use swarmgate_tokens::{
    AccessClaims, ClientAssertionError, ClientKeys, CLIENT_SUBJECT_PREFIX, NODE_SUBJECT_PREFIX,
};

use super::audit::Subject;
use super::authn::Presented;
use super::sync::Changed;
use super::{Actor, Credential, Identity, Principal, RequestMeta};
use crate::clock::{now_ms, now_secs};
use crate::error::{Error, Result};

pub const SECRET_BASIC: &str = "client_secret_basic";
pub const SECRET_POST: &str = "client_secret_post";
pub const PRIVATE_KEY_JWT: &str = "private_key_jwt";
pub const AUTH_METHODS: [&str; 3] = [SECRET_BASIC, SECRET_POST, PRIVATE_KEY_JWT];
pub const GRANT_TYPES: [&str; 3] = ["client_credentials", "password", "refresh_token"];
/// Lifetime of a `client_credentials` token: machines ask again cheaply,
/// so a leaked token is useful for an hour at most.
pub const CLIENT_TOKEN_TTL_SECS: i64 = 3600;
const SECRET_PREFIX: &str = "sgc_";
const MAX_NODE_TTL_MINUTES: u64 = 7 * 24 * 60;
/// A fetched `jwks_uri` is used this long before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(300);
const JWKS_MAX_BYTES: usize = 64 * 1024;

/// What an operator registers.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
}

/// A registered client and, for the secret methods, its secret, shown once.
pub struct CreatedClient {
    pub client: OAuthClient,
    pub secret: Option<String>,
}

/// How a request to the token, introspection or revocation endpoint
/// authenticated its client.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    None,
    Secret {
        client_id: String,
        secret: String,
        method: &'static str,
    },
    Jwt {
        /// The `client_id` form field, when sent; must match the assertion.
        client_id: Option<String>,
        assertion: String,
    },
}

/// A client as requests see it: the record and its compiled scopes.
pub(super) struct LiveClient {
    pub(super) client: OAuthClient,
    pub(super) grants: Arc<GrantSet>,
}

/// A client as read at a version; `None` remembers a deleted client.
type Versioned = Arc<(i64, Option<Arc<LiveClient>>)>;

pub(super) struct ClientCache {
    /// By client id.
    inner: Cache<String, Versioned>,
    /// Client key sets: fetched from `jwks_uri`s (by URI) or registered
    /// inline (by `inline:CLIENT_ID`).
    jwks: Cache<String, Arc<ClientKeys>>,
    /// `(version, cutoff)` by node id: tokens of the node issued at or
    /// before the cutoff are refused.
    node_cutoffs: Cache<String, (i64, Option<i64>)>,
    /// `jwks_uri`s whose last fetch failed, for a few seconds.
    jwks_failed: Cache<String, ()>,
    http: reqwest::Client,
}

impl ClientCache {
    pub(super) fn new() -> Self {
        Self {
            inner: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(super::authn::USER_CACHE_TTL)
                .build(),
            jwks: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(JWKS_TTL)
                .build(),
            node_cutoffs: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(super::authn::USER_CACHE_TTL)
                .build(),
            jwks_failed: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(10))
                .build(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }

    pub(super) fn forget(&self, client_id: &str) {
        self.inner.invalidate(client_id);
    }

    pub(super) fn forget_node(&self, node_id: &str) {
        self.node_cutoffs.invalidate(node_id);
    }
}

/// An issued client or node token.
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: Option<String>,
}

pub(super) fn client_subject(id: &str) -> String {
    format!("{CLIENT_SUBJECT_PREFIX}{id}")
}

pub(super) fn node_subject(id: &str) -> String {
    format!("{NODE_SUBJECT_PREFIX}{id}")
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    ValidationError::new(field, message.into()).into()
}

/// A node id: what a node calls itself, also a path-safe label.
pub fn validate_node_id(node_id: &str) -> Result<()> {
    let ok = (1..=128).contains(&node_id.len())
        && node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "node_id",
            "must be 1 to 128 characters: letters, digits, - _ . :",
        ))
    }
}

impl Identity {
    /// Registers a client. Its scopes may not exceed what the registering
    /// caller holds.
    pub async fn create_client(
        &self,
        actor: Actor<'_>,
        new: NewClient,
        meta: &RequestMeta,
    ) -> Result<CreatedClient> {
        actor.require("clients.manage")?;
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
        if let Actor::Caller(p) = actor {
            let wanted = Role {
                name: "client".into(),
                permissions: new.scopes.clone(),
                grants,
            };
            if !p.covers_role(&wanted) {
                return Err(Error::Forbidden(
                    "a client's scopes may not exceed your own permissions".into(),
                ));
            }
        }
        let method = new.token_endpoint_auth_method.as_str();
        if !AUTH_METHODS.contains(&method) {
            return Err(invalid(
                "token_endpoint_auth_method",
                format!("must be one of {}", AUTH_METHODS.join(", ")),
            ));
        }
        let (jwks, jwks_uri) = if method == PRIVATE_KEY_JWT {
            match (&new.jwks, &new.jwks_uri) {
                (Some(jwks), None) => {
                    ClientKeys::parse(jwks).map_err(|e| invalid("jwks", e))?;
                    (Some(jwks.to_string()), None)
                }
                (None, Some(uri)) => {
                    // Plain http would let anyone on the path swap in their
                    // own keys; it is allowed only to this machine (tests,
                    // a sidecar).
                    let parsed = reqwest::Url::parse(uri).ok().filter(|u| {
                        uri.len() <= 2048
                            && (u.scheme() == "https"
                                || (u.scheme() == "http"
                                    && matches!(
                                        u.host_str(),
                                        Some("127.0.0.1" | "localhost" | "[::1]")
                                    )))
                    });
                    if parsed.is_none() {
                        return Err(invalid(
                            "jwks_uri",
                            "must be an https URL (http only to localhost)",
                        ));
                    }
                    (None, Some(uri.clone()))
                }
                _ => {
                    return Err(invalid(
                        "jwks",
                        "private_key_jwt needs exactly one of jwks or jwks_uri",
                    ))
                }
            }
        } else {
            if new.jwks.is_some() || new.jwks_uri.is_some() {
                return Err(invalid(
                    "jwks",
                    "only a private_key_jwt client registers keys",
                ));
            }
            (None, None)
        };
        let secret =
            (method != PRIVATE_KEY_JWT).then(|| swarmgate_tokens::new_opaque(SECRET_PREFIX).token);
        let now = now_secs();
        let client = OAuthClient {
            id: uuid::Uuid::new_v4().to_string(),
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

    pub async fn list_clients(&self, actor: Actor<'_>) -> Result<Vec<OAuthClient>> {
        actor.require("clients.manage")?;
        Ok(self.store.list_clients().await?)
    }

    /// Deletes a client; its tokens stop working on every instance at once.
    pub async fn delete_client(
        &self,
        actor: Actor<'_>,
        id: &str,
        meta: &RequestMeta,
    ) -> Result<()> {
        actor.require("clients.manage")?;
        match self.store.delete_client(id, now_secs()).await {
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
    pub(super) async fn current_client(
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
        crate::metrics::record_auth("client", outcome);
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
        let now = now_secs();
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
                now_ms(),
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
                .claim_once(&guard, now_ms() + 30_000, now_ms())
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
        match fetch_jwks(&self.clients.http, uri).await {
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

    /// `grant_type=client_credentials`: a token for the client itself,
    /// narrowed to `scope` when asked.
    pub async fn client_credentials(
        &self,
        client: &OAuthClient,
        scope: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<IssuedToken> {
        if !client.grant_types.iter().any(|g| g == "client_credentials") {
            return Err(Error::OAuth {
                error: "unauthorized_client",
                description: "this client may not use the client_credentials grant".into(),
            });
        }
        let granted = GrantSet::parse(&client.scopes).unwrap_or_default();
        let scopes: Vec<String> = match scope.map(str::split_whitespace) {
            Some(asked) => {
                let asked: Vec<String> = asked.map(str::to_string).collect();
                if asked.is_empty() {
                    client.scopes.clone()
                } else {
                    for s in &asked {
                        let covered = Grant::parse(s).is_ok_and(|g| granted.covers(&g));
                        if !covered {
                            return Err(Error::OAuth {
                                error: "invalid_scope",
                                description: format!("{s:?} is not among the client's scopes"),
                            });
                        }
                    }
                    asked
                }
            }
            None => client.scopes.clone(),
        };
        let scope = scopes.join(" ");
        let now = now_secs();
        let claims = AccessClaims {
            iss: self.settings.public_url.clone(),
            aud: self.settings.audience.clone(),
            sub: client_subject(&client.id),
            exp: now + CLIENT_TOKEN_TTL_SECS,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            role: "client".into(),
            client_id: Some(client.id.clone()),
            scope: Some(scope.clone()),
            ..Default::default()
        };
        let access_token = self.keys.current().issue(&claims)?;
        self.audit
            .record(
                "client_token_issued",
                "success",
                Subject {
                    user_id: Some(&claims.sub),
                    username: Some(&client.name),
                },
                meta,
                json!({ "client_id": client.id, "scope": scope, "jti": claims.jti }),
            )
            .await;
        Ok(IssuedToken {
            access_token,
            expires_in: CLIENT_TOKEN_TTL_SECS,
            scope: Some(scope),
        })
    }

    /// When `node_id`'s tokens were last revoked, as of `version` (the
    /// node's version in the shared state), from the cache when that fresh.
    pub(super) async fn node_token_cutoff(
        &self,
        node_id: &str,
        version: i64,
    ) -> Result<Option<i64>> {
        if let Some((cached_version, cutoff)) = self.clients.node_cutoffs.get(node_id) {
            if cached_version == version {
                return Ok(cutoff);
            }
        }
        let cutoff = self.store.node_token_cutoff(node_id).await?;
        self.clients
            .node_cutoffs
            .insert(node_id.to_string(), (version, cutoff));
        Ok(cutoff)
    }

    /// Stops every token minted for `node_id` so far, on every instance at
    /// once (`nodes.manage`): for a node that was lost or compromised.
    pub async fn revoke_node_tokens(
        &self,
        principal: &Principal,
        node_id: &str,
        meta: &RequestMeta,
    ) -> Result<()> {
        principal.require("nodes.manage")?;
        validate_node_id(node_id)?;
        self.store.revoke_node_tokens(node_id, now_secs()).await?;
        self.publish_change_soon(Changed::Node(node_id)).await;
        self.audit
            .record(
                "node_tokens_revoked",
                "success",
                Subject {
                    user_id: Some(&principal.user_id),
                    username: Some(&principal.username),
                },
                meta,
                json!({ "node_id": node_id }),
            )
            .await;
        Ok(())
    }

    /// Mints a token with role `node` for `node_id` (`nodes.manage`).
    pub async fn node_token(
        &self,
        principal: &Principal,
        node_id: &str,
        ttl_minutes: Option<u64>,
        meta: &RequestMeta,
    ) -> Result<IssuedToken> {
        principal.require("nodes.manage")?;
        validate_node_id(node_id)?;
        let ttl_secs = match ttl_minutes {
            Some(m) if (1..=MAX_NODE_TTL_MINUTES).contains(&m) => m as i64 * 60,
            Some(_) => {
                return Err(invalid(
                    "ttl_minutes",
                    format!("must be between 1 and {MAX_NODE_TTL_MINUTES}"),
                ))
            }
            None => self.settings.node_token_ttl.as_secs() as i64,
        };
        // A token minted in the very second of a revocation must not fall
        // under it.
        let cutoff = self.store.node_token_cutoff(node_id).await?;
        let now = cutoff.map_or(now_secs(), |c| now_secs().max(c + 1));
        let claims = AccessClaims {
            iss: self.settings.public_url.clone(),
            aud: self.settings.audience.clone(),
            sub: node_subject(node_id),
            exp: now + ttl_secs,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            role: NODE_ROLE.into(),
            node_id: Some(node_id.to_string()),
            ..Default::default()
        };
        let access_token = self.keys.current().issue(&claims)?;
        self.audit
            .record(
                "node_token_issued",
                "success",
                Subject {
                    user_id: Some(&principal.user_id),
                    username: Some(&principal.username),
                },
                meta,
                json!({ "node_id": node_id, "jti": claims.jti, "expires_at": claims.exp }),
            )
            .await;
        Ok(IssuedToken {
            access_token,
            expires_in: ttl_secs,
            scope: None,
        })
    }

    /// RFC 7662: whether `token` is active now, and what it is. Anything
    /// that does not verify, expired, or was revoked is `{"active": false}`.
    pub async fn introspect(&self, token: &str) -> Result<Value> {
        let inactive = json!({ "active": false });
        if token.starts_with(super::REFRESH_TOKEN_PREFIX) {
            let hash = swarmgate_tokens::hash_opaque(token);
            let Some((session_id, user_id, iat, exp)) =
                self.store.live_refresh_token(&hash, now_secs()).await?
            else {
                return Ok(inactive);
            };
            let user = match self.store.get_user(&user_id).await {
                Ok(user) if !user.disabled => user,
                _ => return Ok(inactive),
            };
            return Ok(json!({
                "active": true, "token_type": "refresh_token", "sub": user.id,
                "username": user.username, "iat": iat, "exp": exp, "sid": session_id,
                "iss": self.settings.public_url,
            }));
        }
        let principal = match self.inspect(Presented::Bearer(token)).await {
            Ok(p) => p,
            Err(e @ Error::Unavailable { .. }) => return Err(e),
            Err(_) => return Ok(inactive),
        };
        // What the credential may do: a key or an agent only what it was
        // granted (its owner's role narrows it further at every request).
        let scope = match &principal.credential {
            Credential::ApiKey { grants, .. } | Credential::Agent { grants, .. } => grants
                .grants()
                .iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            _ => principal.role.permissions.join(" "),
        };
        let mut body = json!({
            "active": true,
            "sub": principal.user_id,
            "username": principal.username,
            "role": principal.role.name,
            "scope": scope,
            "auth_method": principal.auth_method().as_str(),
        });
        match &principal.credential {
            Credential::ApiKey { key_id, .. } => {
                body["token_type"] = json!("api_key");
                body["key_id"] = json!(key_id);
            }
            _ => {
                let claims = self.verify_access_token(token).await?;
                body["token_type"] = json!("Bearer");
                for (field, value) in [
                    ("exp", json!(claims.exp)),
                    ("iat", json!(claims.iat)),
                    ("nbf", json!(claims.nbf)),
                    ("iss", json!(claims.iss)),
                    ("aud", json!(claims.aud)),
                    ("jti", json!(claims.jti)),
                ] {
                    body[field] = value;
                }
                if let Some(client_id) = claims.client_id {
                    body["client_id"] = json!(client_id);
                }
                if let Some(node_id) = claims.node_id {
                    body["node_id"] = json!(node_id);
                }
                if let Some(act) = claims.act {
                    // An agent: `sub` of the token is the agent, `act.sub`
                    // the user it acts for.
                    body["sub"] = json!(claims.sub);
                    body["act"] = json!({ "sub": act.sub });
                    body["sid"] = json!(claims.sid);
                }
            }
        }
        Ok(body)
    }

    /// RFC 7009: revokes `token` if it is one of ours. A token issued to a
    /// client may be revoked only by that client; an unknown or already
    /// invalid token is not an error (section 2.2).
    pub async fn revoke_token(
        &self,
        token: &str,
        client: Option<&OAuthClient>,
        meta: &RequestMeta,
    ) -> Result<()> {
        if token.starts_with(super::REFRESH_TOKEN_PREFIX) {
            let hash = swarmgate_tokens::hash_opaque(token);
            if let Some((session_id, user_id, _, _)) =
                self.store.live_refresh_token(&hash, now_secs()).await?
            {
                self.revoke_session_by_id(&session_id, &user_id, "revoked", meta)
                    .await?;
            }
            return Ok(());
        }
        let Ok(claims) = self.verify_access_token(token).await else {
            return Ok(());
        };
        if let Some(owner) = &claims.client_id {
            if client.map(|c| &c.id) != Some(owner) {
                return Err(match client {
                    None => Error::InvalidClient(
                        "revoking a client's token needs that client's authentication".into(),
                    ),
                    Some(_) => Error::OAuth {
                        error: "unauthorized_client",
                        description: "a client's token may be revoked only by that client".into(),
                    },
                });
            }
        }
        if !claims.sid.is_empty() {
            return self
                .revoke_session_by_id(&claims.sid, &claims.sub, "revoked", meta)
                .await;
        }
        let until = claims.exp + swarmgate_tokens::LEEWAY_SECS as i64;
        self.store
            .revoke_token(&claims.jti, now_secs(), until)
            .await?;
        let now = now_ms();
        if let Err(e) = self
            .state
            .revoke(Revocable::Token, &claims.jti, until * 1000, now)
            .await
        {
            tracing::warn!(error = %e, "token revocation not published yet; the poller will retry");
        }
        self.audit
            .record(
                "token_revoked",
                "success",
                Subject {
                    user_id: Some(&claims.sub),
                    username: None,
                },
                meta,
                json!({ "jti": claims.jti, "client_id": claims.client_id, "node_id": claims.node_id }),
            )
            .await;
        Ok(())
    }

    async fn revoke_session_by_id(
        &self,
        session_id: &str,
        user_id: &str,
        reason: &str,
        meta: &RequestMeta,
    ) -> Result<()> {
        self.store
            .revoke_session(session_id, reason, now_secs())
            .await?;
        self.publish_revocation(session_id).await;
        self.audit
            .record(
                "session_revoked",
                "success",
                Subject {
                    user_id: Some(user_id),
                    username: None,
                },
                meta,
                json!({ "session_id": session_id, "via": "rfc7009" }),
            )
            .await;
        Ok(())
    }

    /// Publishes tokens revoked one by one (`since`, or all still live).
    pub(super) async fn republish_tokens(&self, since: i64, full: bool) -> Result<usize> {
        let now = now_ms();
        let live_at = full.then_some(now / 1000);
        let tokens = self.store.revoked_tokens(since, live_at).await?;
        for (jti, until) in &tokens {
            self.state
                .revoke(Revocable::Token, jti, until * 1000, now)
                .await?;
        }
        Ok(tokens.len())
    }
}

async fn fetch_jwks(http: &reqwest::Client, uri: &str) -> Result<Arc<ClientKeys>, String> {
    let mut response = http.get(uri).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{uri} answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&chunk);
        if body.len() > JWKS_MAX_BYTES {
            return Err(format!("{uri} sent more than 64 KiB"));
        }
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
    ClientKeys::parse(&value)
        .map(Arc::new)
        .map_err(|e| format!("the key set {e}"))
}
