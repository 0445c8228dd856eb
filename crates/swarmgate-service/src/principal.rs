//! Who is calling: a verified [`Principal`], how it proved it
//! ([`Credential`]), and the request facts that go into the audit trail.

use std::sync::Arc;

use swarmgate_core::permission::GrantSet;
use swarmgate_core::roles::Role;

use crate::error::{Error, Result};

/// A credential as it arrived.
#[derive(Debug, Clone, Copy)]
pub enum Presented<'a> {
    /// `Authorization: Bearer …`: a JWT, or an API key by its prefix.
    Bearer(&'a str),
    /// `X-API-Key: …`
    ApiKey(&'a str),
}

/// Facts about the request that go into the audit trail.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt,
    ApiKey,
    /// An OAuth2 client's token (`client_credentials`).
    Client,
    /// An agent session's token.
    Agent,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Client => "client",
            AuthMethod::Agent => "agent",
        }
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    Session {
        session_id: String,
    },
    ApiKey {
        key_id: String,
        /// The key's own grants; what it may do is these intersected with
        /// its owner's current role.
        grants: Arc<GrantSet>,
        models: Option<Arc<[String]>>,
        limits: Option<swarmgate_core::LimitSet>,
        /// Unix seconds.
        expires_at: i64,
    },
    /// An OAuth2 client's access token. The principal's role holds the
    /// token's `scope`; `grants` are the client's scopes now, so narrowing
    /// or deleting the client takes effect on the next request.
    Client {
        client_id: String,
        jti: String,
        grants: Arc<GrantSet>,
    },
    /// A node token (role `node`), minted by an operator for one node.
    Node {
        node_id: String,
        jti: String,
    },
    /// An agent session's token. The principal is its parent user (with
    /// the parent's current role); `grants` are what the agent was given,
    /// so it may do only what both allow.
    Agent {
        session_id: String,
        agent_id: String,
        grants: Arc<GrantSet>,
        /// Unix ms.
        expires_at: i64,
        claims: Arc<swarmgate_tokens::AgentClaims>,
    },
}

/// A verified caller, with its user's *current* role (not the one in a
/// token), so a demotion takes effect on the next request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub role: Arc<Role>,
    pub credential: Credential,
    /// The user's own limits (on top of the role's).
    pub user_limits: Option<swarmgate_core::LimitSet>,
}

impl Principal {
    pub fn auth_method(&self) -> AuthMethod {
        match self.credential {
            Credential::Session { .. } | Credential::Node { .. } => AuthMethod::Jwt,
            Credential::ApiKey { .. } => AuthMethod::ApiKey,
            Credential::Client { .. } => AuthMethod::Client,
            Credential::Agent { .. } => AuthMethod::Agent,
        }
    }

    /// The grants that narrow the role, if the credential has its own.
    pub(crate) fn credential_grants(&self) -> Option<&GrantSet> {
        match &self.credential {
            Credential::ApiKey { grants, .. }
            | Credential::Client { grants, .. }
            | Credential::Agent { grants, .. } => Some(grants),
            Credential::Session { .. } | Credential::Node { .. } => None,
        }
    }

    /// The id of the credential itself: the session, key, token or agent
    /// session it came with.
    pub fn credential_id(&self) -> &str {
        match &self.credential {
            Credential::Session { session_id } | Credential::Agent { session_id, .. } => session_id,
            Credential::ApiKey { key_id, .. } => key_id,
            Credential::Client { jti, .. } | Credential::Node { jti, .. } => jti,
        }
    }

    /// The node this caller speaks for: a node token's node, or an OAuth2
    /// client's id (a node may authenticate as a client with private key
    /// JWT, so no long-lived secret lives on it).
    pub fn node_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::Node { node_id, .. } => Some(node_id),
            Credential::Client { client_id, .. } => Some(client_id),
            Credential::Session { .. } | Credential::ApiKey { .. } | Credential::Agent { .. } => {
                None
            }
        }
    }

    /// Whether the caller is a user (a session or an API key), not a
    /// machine identity.
    pub fn is_user(&self) -> bool {
        matches!(
            self.credential,
            Credential::Session { .. } | Credential::ApiKey { .. }
        )
    }

    /// What the grants alone say: the role allows it, and so does the
    /// credential if it has grants of its own. Only the decision point
    /// (`crate::authz`) asks this.
    pub(crate) fn allows(&self, permission: &str, resource: Option<&str>) -> bool {
        self.role.grants.allows(permission, resource, &self.user_id)
            && self
                .credential_grants()
                .is_none_or(|grants| grants.allows(permission, resource, &self.user_id))
    }

    /// The first grant of `target` this caller does not hold itself,
    /// through its role and, for a key, through the key too (so a key
    /// holding only `users.manage` cannot hand out more than itself).
    pub(crate) fn first_uncovered<'g>(
        &self,
        target: &'g GrantSet,
    ) -> Option<&'g swarmgate_core::permission::Grant> {
        target.grants().iter().find(|g| {
            !(self.role.grants.covers(g) && self.credential_grants().is_none_or(|c| c.covers(g)))
        })
    }

    /// The session of a password login; API keys have none.
    pub fn session_id(&self) -> Result<&str> {
        match &self.credential {
            Credential::Session { session_id } => Ok(session_id),
            Credential::ApiKey { .. } => Err(Error::Forbidden(
                "this needs a login session; API keys cannot do it".into(),
            )),
            Credential::Client { .. } | Credential::Node { .. } | Credential::Agent { .. } => {
                Err(Error::Forbidden(
                    "this needs a user's login session; clients, nodes and agents cannot do it"
                        .into(),
                ))
            }
        }
    }
}
