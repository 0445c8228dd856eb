//! Turning a presented credential into a [`Principal`].

use swarmgate_tokens::TokenError;

use super::{AuthMethod, Identity, Principal};
use crate::clock::now_ms;
use crate::error::{Error, Result};

impl Identity {
    /// Verifies an access token and that its session is still alive.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Principal> {
        let claims = match self.keys.current().verify(token) {
            Err(TokenError::UnknownKey) if self.keys.reload_for_unknown_kid().await => {
                self.keys.current().verify(token)?
            }
            other => other?,
        };
        if self.state.is_session_revoked(&claims.sid, now_ms()).await? {
            return Err(Error::SessionRevoked);
        }
        Ok(Principal {
            user_id: claims.sub,
            username: claims.username,
            role: claims.role,
            session_id: claims.sid,
            auth_method: AuthMethod::Jwt,
        })
    }
}
