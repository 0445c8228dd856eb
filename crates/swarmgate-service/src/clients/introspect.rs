//! What a token is (RFC 7662 introspection) and ending one (RFC 7009
//! revocation).

use serde_json::json;
use swarmgate_core::OAuthClient;
use swarmgate_state::Revocable;

use crate::audit::Subject;
use crate::error::{Error, Result};
use crate::identity::{Identity, REFRESH_TOKEN_PREFIX};
use crate::principal::{Credential, Presented, RequestMeta};

/// What introspection finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspection {
    /// Not ours, expired, revoked, or its user is gone or disabled.
    Inactive,
    Active(Box<ActiveToken>),
}

/// An active token and what it is (RFC 7662 section 2.2); fields a kind of
/// token does not have are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveToken {
    /// `refresh_token`, `api_key` or `Bearer`.
    pub token_type: &'static str,
    /// The user (or client, node, agent) the token is.
    pub sub: String,
    pub username: String,
    pub role: Option<String>,
    /// What the credential may do, space-separated.
    pub scope: Option<String>,
    pub auth_method: Option<&'static str>,
    pub key_id: Option<String>,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    pub iss: Option<String>,
    pub aud: Option<String>,
    pub jti: Option<String>,
    pub client_id: Option<String>,
    pub node_id: Option<String>,
    /// An agent: the user it acts for (RFC 8693 `act.sub`).
    pub act_sub: Option<String>,
    /// A refresh token's or an agent's session.
    pub sid: Option<String>,
}

impl Identity {
    /// RFC 7662: whether `token` is active now, and what it is. Anything
    /// that does not verify, expired, or was revoked is inactive.
    pub async fn introspect(&self, token: &str) -> Result<Introspection> {
        if token.starts_with(REFRESH_TOKEN_PREFIX) {
            return self.introspect_refresh(token).await;
        }
        let principal = match self.inspect(Presented::Bearer(token)).await {
            Ok(p) => p,
            Err(e @ Error::Unavailable { .. }) => return Err(e),
            Err(_) => return Ok(Introspection::Inactive),
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
        let mut active = ActiveToken {
            token_type: "Bearer",
            sub: principal.user_id.clone(),
            username: principal.username.clone(),
            role: Some(principal.role.name.clone()),
            scope: Some(scope),
            auth_method: Some(principal.auth_method().as_str()),
            ..Default::default()
        };
        if let Credential::ApiKey { key_id, .. } = &principal.credential {
            active.token_type = "api_key";
            active.key_id = Some(key_id.clone());
            return Ok(Introspection::Active(Box::new(active)));
        }
        let claims = self.verify_access_token(token).await?;
        if let Some(act) = claims.act {
            // An agent: `sub` of the token is the agent, `act.sub` the
            // user it acts for.
            active.sub = claims.sub;
            active.act_sub = Some(act.sub);
            active.sid = Some(claims.sid);
        }
        active.exp = Some(claims.exp);
        active.iat = Some(claims.iat);
        active.nbf = Some(claims.nbf);
        active.iss = Some(claims.iss);
        active.aud = Some(claims.aud);
        active.jti = Some(claims.jti);
        active.client_id = claims.client_id;
        active.node_id = claims.node_id;
        Ok(Introspection::Active(Box::new(active)))
    }

    async fn introspect_refresh(&self, token: &str) -> Result<Introspection> {
        let hash = swarmgate_tokens::hash_opaque(token);
        let now = self.clock.now_secs();
        let Some((session_id, user_id, iat, exp)) =
            self.store.live_refresh_token(&hash, now).await?
        else {
            return Ok(Introspection::Inactive);
        };
        let user = match self.store.get_user(&user_id).await {
            Ok(user) if !user.disabled => user,
            _ => return Ok(Introspection::Inactive),
        };
        Ok(Introspection::Active(Box::new(ActiveToken {
            token_type: "refresh_token",
            sub: user.id,
            username: user.username,
            iat: Some(iat),
            exp: Some(exp),
            sid: Some(session_id),
            iss: Some(self.settings.public_url.clone()),
            ..Default::default()
        })))
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
        if token.starts_with(REFRESH_TOKEN_PREFIX) {
            let hash = swarmgate_tokens::hash_opaque(token);
            if let Some((session_id, user_id, _, _)) = self
                .store
                .live_refresh_token(&hash, self.clock.now_secs())
                .await?
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
            .revoke_token(&claims.jti, self.clock.now_secs(), until)
            .await?;
        let now = self.clock.now_ms();
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
                Subject::id(&claims.sub),
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
            .revoke_session(session_id, reason, self.clock.now_secs())
            .await?;
        self.publish_revocation(session_id).await;
        self.audit
            .record(
                "session_revoked",
                "success",
                Subject::id(user_id),
                meta,
                json!({ "session_id": session_id, "via": "rfc7009" }),
            )
            .await;
        Ok(())
    }

    /// Publishes tokens revoked one by one (`since`, or all still live).
    pub(crate) async fn republish_tokens(&self, since: i64, full: bool) -> Result<usize> {
        let now = self.clock.now_ms();
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
