//! The `client_credentials` grant: a token for the client itself, its
//! scope narrowed when asked.

use serde_json::json;
use swarmgate_core::permission::{Grant, GrantSet};
use swarmgate_core::OAuthClient;
use swarmgate_tokens::AccessClaims;

use super::{client_subject, IssuedToken, CLIENT_TOKEN_TTL_SECS};
use crate::audit::Subject;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::principal::RequestMeta;

impl Identity {
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
        let now = self.clock.now_secs();
        let claims = AccessClaims {
            iss: self.settings.public_url.clone(),
            aud: self.settings.audience.clone(),
            sub: client_subject(&client.id),
            exp: now + CLIENT_TOKEN_TTL_SECS,
            iat: now,
            nbf: now,
            jti: swarmgate_core::random::uuid_string(),
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
}
