//! The policy enforcement point: a request on a configured route is
//! authenticated (by the handler), checked against the permission its
//! method needs on that route (with the `{owner}` segment as the resource
//! for `:own` grants), and forwarded with the caller's identity and a signed
//! assertion the upstream can verify offline.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use swarmgate_gateway::forward::Incoming;
use swarmgate_gateway::{ForwardError, Forwarder, RouteMatch, RouteTable};

use crate::clock::now_ms;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::identity::{Identity, Principal};

pub struct Gateway {
    routes: Arc<RouteTable>,
    forwarder: Forwarder,
}

impl Gateway {
    pub fn new(settings: &Settings) -> Self {
        Self {
            routes: settings.routes.clone(),
            forwarder: Forwarder::new(
                settings.gateway.trusted_proxies.clone(),
                settings.gateway.max_body_bytes,
            ),
        }
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Decides, then forwards.
    pub async fn proxy(
        &self,
        identity: &Identity,
        principal: &Principal,
        matched: &RouteMatch<'_>,
        incoming: Incoming,
    ) -> Result<Response<Body>> {
        let route = matched.route;
        let Some(permission) = route.permission_for(&incoming.method) else {
            return Err(Error::MethodNotAllowed);
        };
        let resource = matched
            .owner
            .as_ref()
            .map(|owner| format!("{}:{owner}", route.name));
        if !identity.check_permission(principal, permission, resource.as_deref())? {
            return Err(Error::Forbidden(match &resource {
                Some(r) => format!("missing permission {permission} on {r}"),
                None => format!("missing permission {permission}"),
            }));
        }
        let assertion = identity.issue_assertion(principal, &route.name)?;
        let who = swarmgate_gateway::Identity {
            subject: principal.user_id.clone(),
            role: principal.role.name.clone(),
            auth_method: principal.auth_method().as_str(),
            assertion,
        };
        self.forwarder
            .forward(matched, incoming, &who, now_ms)
            .await
            .map_err(|e| match e {
                ForwardError::NoUpstream(route) => Error::Unavailable {
                    component: "upstream",
                    detail: format!("every upstream of route {route} is ejected"),
                },
                ForwardError::Timeout(after) => Error::GatewayTimeout(after),
                ForwardError::TooLarge(_) => Error::PayloadTooLarge,
                ForwardError::Connect(detail) | ForwardError::Upstream(detail) => {
                    Error::BadGateway(detail)
                }
            })
    }
}
