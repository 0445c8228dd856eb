//! The reverse proxy of swarmgate, without identity: which route a path
//! belongs to (longest prefix, with an optional `{owner}` segment), which of
//! its upstreams to use (round robin with passive health), and forwarding a
//! request there with bodies streamed both ways. Authentication and the
//! permission decision happen before, in the server crate, which hands this
//! crate the identity headers to add.

pub mod config;
pub mod forward;
pub mod guarded;
pub mod models;
pub mod pool;
pub mod routes;
pub mod upstream;
pub mod usage;

pub use config::{GatewayConfig, RouteConfig};
pub use forward::{ForwardError, Forwarder, Identity, Target};
pub use models::{Model, ModelConfig, ModelTable};
pub use routes::{Route, RouteMatch, RouteTable};
