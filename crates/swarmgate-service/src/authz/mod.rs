//! The one decision point. Every "may this caller do this?" in swarmgate
//! (a route, a model, an admin action, handing grants to a key, an agent
//! or a client, acting for a node, any permission) is asked here, through
//! [`Authz::authorize`], and every refusal is counted in
//! `swarmgate_permission_denied_total{action}` and written to the audit
//! trail (aggregated per minute) in the same way.
//!
//! What it weighs: the caller's grants (its user's role *now*, with
//! wildcards and `:own`), narrowed by the credential's own grants (an API
//! key within its owner, an agent within its parent, a client within its
//! scopes), and what the resource adds (a role the caller's grants must
//! cover, a node the caller must speak for, grants to hand on).
//!
//! It is async so that relationship checks (a tuple store) can join the
//! role checks here without touching any caller.

mod denials;

use std::fmt;

use swarmgate_core::permission::GrantSet;
use swarmgate_core::roles::Role;

use crate::audit::Audit;
use crate::error::{Error, Result};
use crate::principal::{Credential, Principal};

pub use denials::WINDOW_MS;

/// Who asks: a caller of the API, or the operator at the command line
/// (who may do anything: they already hold the database).
#[derive(Clone, Copy)]
pub enum Actor<'a> {
    Caller(&'a Principal),
    Operator,
}

impl<'a> From<&'a Principal> for Actor<'a> {
    fn from(principal: &'a Principal) -> Self {
        Actor::Caller(principal)
    }
}

impl Actor<'_> {
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Actor::Caller(p) => Some(&p.user_id),
            Actor::Operator => None,
        }
    }
}

/// What the new thing is that grants are handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delegate {
    /// An API key: only a login session makes one, within its user's role.
    ApiKey,
    /// An agent session: only a user (session or key) spawns one, within
    /// what the spawning credential may do.
    Agent,
    /// An OAuth2 client: its scopes within the registering caller's.
    Client,
}

/// What is asked.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// Doing what a permission names (`tasks.read`, `users.manage`).
    Permission(&'a str),
    /// Calling a model: its permission (`models.NAME.invoke`, or
    /// `inference.invoke` for every model) and, for a key or agent limited
    /// to a list of models, that list.
    InvokeModel { model: &'a str, permission: &'a str },
    /// Handing grants ([`Resource::Grants`]) on to a new credential.
    Delegate(Delegate),
    /// Whether a view widens: everyone's sessions or usage instead of the
    /// caller's own, a model shown in a listing, another's item shown
    /// instead of "not found". Decided as the inner action is; a "no"
    /// narrows what is shown and refuses nothing, so it is not counted.
    View(&'a Action<'a>),
}

/// What it is asked about.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    Any,
    /// A named resource, for `:own` grants (`memory:USER_ID`).
    Named(&'a str),
    /// A configured route, with its `{owner}` resource if it has one.
    Route(Option<&'a str>),
    /// A user of this role, or this role to be assigned: the caller's
    /// grants must cover everything the role grants.
    Role(&'a Role),
    /// A node: a node speaks only for itself, `nodes.manage` for any.
    Node(&'a str),
    /// Grants to hand on.
    Grants(&'a GrantSet),
}

/// The answer: why it is yes or no.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Decision {
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Granted,
    /// The operator at the command line.
    Operator,
    MissingPermission {
        permission: String,
        on: Option<String>,
    },
    ModelNotAllowed {
        model: String,
        permission: String,
    },
    RoleNotCovered {
        role: String,
    },
    GrantNotCovered {
        to: Delegate,
        grant: String,
    },
    /// The credential cannot do this at all (an API key minting keys).
    Credential(&'static str),
    OtherNode {
        speaks_for: Option<String>,
        node: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Granted | Reason::Operator => f.write_str("allowed"),
            Reason::MissingPermission {
                permission,
                on: None,
            } => write!(f, "missing permission {permission}"),
            Reason::MissingPermission {
                permission,
                on: Some(on),
            } => write!(f, "missing permission {permission} on {on}"),
            Reason::ModelNotAllowed { model, .. } => write!(f, "you may not use the model {model}"),
            Reason::RoleNotCovered { role } => {
                write!(f, "role {role} has grants beyond your own")
            }
            Reason::GrantNotCovered {
                to: Delegate::ApiKey,
                grant,
            } => write!(f, "permission {grant} is not covered by your own grants"),
            Reason::GrantNotCovered {
                to: Delegate::Agent,
                ..
            } => f.write_str("an agent cannot be given permissions its parent does not hold"),
            Reason::GrantNotCovered {
                to: Delegate::Client,
                ..
            } => f.write_str("a client's scopes may not exceed your own permissions"),
            Reason::Credential(why) => f.write_str(why),
            Reason::OtherNode { speaks_for, node } => write!(
                f,
                "this token speaks for node {:?}, not {node:?}",
                speaks_for.as_deref().unwrap_or("(none)")
            ),
        }
    }
}

impl Decision {
    fn granted() -> Self {
        Self {
            reason: Reason::Granted,
        }
    }

    fn refused(reason: Reason) -> Self {
        Self { reason }
    }

    pub fn allowed(&self) -> bool {
        matches!(self.reason, Reason::Granted | Reason::Operator)
    }

    /// `Ok` when allowed, else a 403 that says why.
    pub fn require(self) -> Result<()> {
        if self.allowed() {
            Ok(())
        } else {
            Err(Error::Forbidden(self.reason.to_string()))
        }
    }
}

/// The decision point and the record of its refusals.
pub struct Authz {
    denials: denials::Denials,
    audit: Audit,
}

impl Authz {
    pub fn new(audit: Audit) -> Self {
        Self {
            denials: denials::Denials::default(),
            audit,
        }
    }

    /// Decides whether `actor` may do `action` on `resource`; a refusal is
    /// counted and audited (in aggregate) before it is returned.
    pub async fn authorize<'a>(
        &self,
        actor: impl Into<Actor<'a>>,
        action: Action<'_>,
        resource: Resource<'_>,
    ) -> Decision {
        let Actor::Caller(principal) = actor.into() else {
            return Decision {
                reason: Reason::Operator,
            };
        };
        let decision = decide(principal, action, resource);
        if !decision.allowed() && !matches!(action, Action::View(_)) {
            self.denials.record(
                &principal.user_id,
                kind(action, resource),
                &asked(&decision),
            );
        }
        decision
    }

    /// [`authorize`](Self::authorize) of a permission on nothing in
    /// particular, a refusal answered as a 403.
    pub async fn require<'a>(&self, actor: impl Into<Actor<'a>>, permission: &str) -> Result<()> {
        self.authorize(actor, Action::Permission(permission), Resource::Any)
            .await
            .require()
    }

    /// Whether `actor` holds `permission`, asked as a [`Action::View`]: the
    /// answer picks a wider or narrower view, and a "no" is not counted.
    pub async fn holds<'a>(&self, actor: impl Into<Actor<'a>>, permission: &str) -> bool {
        let asked = Action::Permission(permission);
        self.authorize(actor, Action::View(&asked), Resource::Any)
            .await
            .allowed()
    }

    /// Writes the refusals counted so far to the audit trail.
    pub async fn flush(&self) {
        self.denials.flush(&self.audit).await;
    }
}

/// The label of a refusal in the metric and the audit rows.
fn kind(action: Action<'_>, resource: Resource<'_>) -> &'static str {
    match (action, resource) {
        (Action::View(inner), _) => kind(*inner, resource),
        (Action::InvokeModel { .. }, _) => "model",
        (Action::Delegate(Delegate::ApiKey), _) => "api_key",
        (Action::Delegate(Delegate::Agent), _) => "agent",
        (Action::Delegate(Delegate::Client), _) => "client",
        (Action::Permission(_), Resource::Route(_)) => "route",
        (Action::Permission(_), Resource::Role(_)) => "admin",
        (Action::Permission(_), Resource::Node(_)) => "node",
        (Action::Permission(_), _) => "permission",
    }
}

/// What a refusal names in its audit row.
fn asked(decision: &Decision) -> String {
    match &decision.reason {
        Reason::MissingPermission { permission, .. } => permission.clone(),
        Reason::ModelNotAllowed { permission, .. } => permission.clone(),
        Reason::RoleNotCovered { role } => format!("role:{role}"),
        Reason::GrantNotCovered { grant, .. } => grant.clone(),
        Reason::Credential(why) => (*why).to_string(),
        Reason::OtherNode { node, .. } => format!("node:{node}"),
        Reason::Granted | Reason::Operator => String::new(),
    }
}

fn decide(principal: &Principal, action: Action<'_>, resource: Resource<'_>) -> Decision {
    match action {
        Action::View(inner) => decide(principal, *inner, resource),
        Action::Permission(permission) => decide_permission(principal, permission, resource),
        Action::InvokeModel { model, permission } => {
            let permitted =
                principal.allows(permission, None) || principal.allows("inference.invoke", None);
            let listed = match &principal.credential {
                Credential::ApiKey {
                    models: Some(list), ..
                } => list.iter().any(|m| m == model),
                Credential::Agent { claims, .. } => claims
                    .models
                    .as_ref()
                    .is_none_or(|list| list.iter().any(|m| m == model)),
                _ => true,
            };
            if permitted && listed {
                Decision::granted()
            } else {
                Decision::refused(Reason::ModelNotAllowed {
                    model: model.to_string(),
                    permission: permission.to_string(),
                })
            }
        }
        Action::Delegate(to) => decide_delegation(principal, to, resource),
    }
}

fn decide_permission(principal: &Principal, permission: &str, resource: Resource<'_>) -> Decision {
    let named = match resource {
        Resource::Named(r) | Resource::Route(Some(r)) => Some(r),
        _ => None,
    };
    if !principal.allows(permission, named) {
        return Decision::refused(Reason::MissingPermission {
            permission: permission.to_string(),
            on: named.map(str::to_string),
        });
    }
    match resource {
        Resource::Role(role) if principal.first_uncovered(&role.grants).is_some() => {
            Decision::refused(Reason::RoleNotCovered {
                role: role.name.clone(),
            })
        }
        Resource::Node(node)
            if !(principal.allows("nodes.manage", None) || principal.node_id() == Some(node)) =>
        {
            Decision::refused(Reason::OtherNode {
                speaks_for: principal.node_id().map(str::to_string),
                node: node.to_string(),
            })
        }
        _ => Decision::granted(),
    }
}

fn decide_delegation(principal: &Principal, to: Delegate, resource: Resource<'_>) -> Decision {
    let credential_ok = match to {
        Delegate::ApiKey => matches!(principal.credential, Credential::Session { .. }),
        Delegate::Agent => principal.is_user(),
        Delegate::Client => true,
    };
    if !credential_ok {
        return Decision::refused(Reason::Credential(match to {
            Delegate::ApiKey => "an API key cannot create API keys",
            _ => "only a user (by session or API key) may spawn agents",
        }));
    }
    let Resource::Grants(grants) = resource else {
        return Decision::granted();
    };
    match principal.first_uncovered(grants) {
        Some(grant) => Decision::refused(Reason::GrantNotCovered {
            to,
            grant: grant.to_string(),
        }),
        None => Decision::granted(),
    }
}

/// Checks the question of `POST /auth/verify-permission` before it is
/// asked: a permission of the grammar, and a printable resource.
pub fn validate_question(permission: &str, resource: Option<&str>) -> Result<()> {
    swarmgate_core::permission::validate_permission(permission)
        .map_err(|e| swarmgate_core::ValidationError::new("permission", e.0))?;
    resource.map_or(Ok(()), validate_resource)
}

/// A resource a grant can be asked about: 1 to 1024 characters, none of
/// them control characters.
pub fn validate_resource(resource: &str) -> Result<()> {
    if resource.is_empty() || resource.len() > 1024 || resource.chars().any(char::is_control) {
        return Err(swarmgate_core::ValidationError::new(
            "resource",
            "must be 1 to 1024 characters without control characters",
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn role(name: &str, grants: &[&str]) -> Arc<Role> {
        Arc::new(Role {
            name: name.into(),
            permissions: grants.iter().map(|g| g.to_string()).collect(),
            grants: GrantSet::parse(grants).unwrap(),
        })
    }

    fn caller(grants: &[&str], credential: Credential) -> Principal {
        Principal {
            user_id: "u1".into(),
            username: "u1".into(),
            role: role("r", grants),
            credential,
            user_limits: None,
        }
    }

    fn session() -> Credential {
        Credential::Session {
            session_id: "s".into(),
        }
    }

    fn key(grants: &[&str], models: Option<&[&str]>) -> Credential {
        Credential::ApiKey {
            key_id: "k".into(),
            grants: Arc::new(GrantSet::parse(grants).unwrap()),
            models: models.map(|m| m.iter().map(|s| s.to_string()).collect()),
            limits: None,
            expires_at: i64::MAX,
        }
    }

    #[test]
    fn a_key_narrows_its_owner_and_own_grants_need_the_resource() {
        let p = caller(
            &["memory.*:own", "tasks.read"],
            key(&["memory.read:own"], None),
        );
        let ok = decide(
            &p,
            Action::Permission("memory.read"),
            Resource::Named("memory:u1"),
        );
        assert!(ok.allowed());
        let other = decide(
            &p,
            Action::Permission("memory.read"),
            Resource::Named("memory:u2"),
        );
        assert_eq!(
            other.reason.to_string(),
            "missing permission memory.read on memory:u2"
        );
        assert!(!decide(&p, Action::Permission("tasks.read"), Resource::Any).allowed());
    }

    #[test]
    fn models_need_their_permission_and_the_key_list() {
        let p = caller(&["models.*"], key(&["models.*"], Some(&["a"])));
        let ask = |m| Action::InvokeModel {
            model: m,
            permission: "models.x.invoke",
        };
        assert!(decide(&p, ask("a"), Resource::Any).allowed());
        assert!(!decide(&p, ask("b"), Resource::Any).allowed());
    }

    #[test]
    fn delegation_stays_within_the_delegator() {
        let p = caller(&["tasks.*"], session());
        let narrow = GrantSet::parse(&["tasks.read"]).unwrap();
        let wide = GrantSet::parse(&["tasks.read", "users.manage"]).unwrap();
        let ask = |g| decide(&p, Action::Delegate(Delegate::ApiKey), Resource::Grants(g));
        assert!(ask(&narrow).allowed());
        assert_eq!(
            ask(&wide).reason.to_string(),
            "permission users.manage is not covered by your own grants"
        );
        let by_key = caller(&["tasks.*"], key(&["tasks.*"], None));
        let d = decide(&by_key, Action::Delegate(Delegate::ApiKey), Resource::Any);
        assert_eq!(
            d.reason,
            Reason::Credential("an API key cannot create API keys")
        );
    }

    #[test]
    fn roles_and_nodes_are_weighed_after_the_permission() {
        let admin = role("admin", &["*"]);
        let p = caller(&["users.manage", "tasks.*"], session());
        let d = decide(
            &p,
            Action::Permission("users.manage"),
            Resource::Role(&admin),
        );
        assert_eq!(
            d.reason.to_string(),
            "role admin has grants beyond your own"
        );
        let node = Principal {
            credential: Credential::Node {
                node_id: "n1".into(),
                jti: "j".into(),
            },
            ..caller(&["nodes.heartbeat"], session())
        };
        let ask = |n| {
            decide(
                &node,
                Action::Permission("nodes.heartbeat"),
                Resource::Node(n),
            )
        };
        assert!(ask("n1").allowed());
        assert!(!ask("n2").allowed());
    }

    #[test]
    fn questions_are_validated() {
        assert!(validate_question("tasks.read", Some("tasks:1")).is_ok());
        assert!(validate_question("tasks..read", None).is_err());
        assert!(validate_question("tasks.read", Some("")).is_err());
    }
}
