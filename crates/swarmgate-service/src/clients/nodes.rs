//! Node tokens: minted by an operator (`nodes.manage`) for one node, role
//! `node`; revoked all at once for a node that was lost or compromised.

use serde_json::json;
use swarmgate_core::roles::NODE_ROLE;
use swarmgate_tokens::AccessClaims;

use super::{invalid, node_subject, validate_node_id, IssuedToken, MAX_NODE_TTL_MINUTES};
use crate::audit::Subject;
use crate::error::Result;
use crate::identity::{Changed, Identity};
use crate::principal::{Principal, RequestMeta};

impl Identity {
    /// When `node_id`'s tokens were last revoked, as of `version` (the
    /// node's version in the shared state), from the cache when that fresh.
    pub(crate) async fn node_token_cutoff(
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
        self.authz.require(principal, "nodes.manage").await?;
        validate_node_id(node_id)?;
        self.store
            .revoke_node_tokens(node_id, self.clock.now_secs())
            .await?;
        self.publish_change_soon(Changed::Node(node_id)).await;
        self.audit
            .record(
                "node_tokens_revoked",
                "success",
                Subject::principal(principal),
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
        self.authz.require(principal, "nodes.manage").await?;
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
        let now = cutoff.map_or(self.clock.now_secs(), |c| self.clock.now_secs().max(c + 1));
        let claims = AccessClaims {
            iss: self.settings.public_url.clone(),
            aud: self.settings.audience.clone(),
            sub: node_subject(node_id),
            exp: now + ttl_secs,
            iat: now,
            nbf: now,
            jti: swarmgate_core::random::uuid_string(),
            role: NODE_ROLE.into(),
            node_id: Some(node_id.to_string()),
            ..Default::default()
        };
        let access_token = self.keys.current().issue(&claims)?;
        self.audit
            .record(
                "node_token_issued",
                "success",
                Subject::principal(principal),
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
}
