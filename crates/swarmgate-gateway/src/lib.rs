//! The data plane of swarmgate: which route a path belongs to (longest
//! prefix, with an optional `{owner}` segment), which of its upstreams to
//! use (round robin with passive health), forwarding a request there with
//! bodies streamed both ways, metering LLM responses, and the enforcement
//! point (`enforce`) that asks the service crate's decision point and quota
//! coordinator before anything is forwarded.

pub mod body;
pub mod call_body;
pub mod config;
pub mod enforce;
pub mod forward;
pub mod guarded;
pub mod models;
pub mod pool;
pub mod routes;
pub mod upstream;
pub mod usage;

pub use body::Body;
pub use config::{GatewayConfig, RouteConfig};
pub use enforce::{Dialect, Gateway, GatewayError, LlmCall, RouteLabel, Tables};
pub use forward::{ForwardError, Forwarder, Identity, Target};
pub use models::{Model, ModelConfig, ModelTable, ProviderProfile};
pub use routes::{Route, RouteMatch, RouteTable};
