//! Domain types and rules of swarmgate that need no I/O: what a valid
//! username, email and password are, how passwords are hashed, which
//! permissions a built-in role carries. Everything here is synchronous and
//! deterministic given its inputs (time is passed in, never read).

pub mod breaker;
pub mod limits;
pub mod model;
pub mod password;
pub mod permission;
pub mod random;
pub mod roles;
pub mod validate;

pub use limits::{LimitSet, OnLimit};
pub use model::{
    AgentSession, ApiKey, AuditEvent, Carve, NewUser, Node, OAuthClient, Role, SigningKeyRow, User,
};
pub use validate::ValidationError;
