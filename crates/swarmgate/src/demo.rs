//! `swarmgate demo`: the embedded defaults plus a mock LLM upstream in the
//! same process, so one command gives a gateway with something behind it.

use swarmgate_core::roles::BUILT_IN;
use swarmgate_gateway::{ModelConfig, RouteConfig};
use swarmgate_server::config::RoleConfig;
use swarmgate_server::Config;

use crate::mock_upstream::{self, MockConfig};

pub const MODEL: &str = "demo-model";

/// Binds the upstream's port and adds the demo model, route and grant to
/// the configuration (on top of whatever the file and environment say).
pub fn add_to(config: &mut Config) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let upstream = format!("http://{}", listener.local_addr()?);
    config.models.push(ModelConfig {
        name: MODEL.into(),
        upstreams: vec![upstream.clone()],
        upstream_api_key_env: None,
        timeout_ms: 60_000,
    });
    config.routes.push(RouteConfig {
        name: "demo".into(),
        path_prefix: "/demo".into(),
        // Under the mock's /echo, so the route can never reach the model's
        // endpoints (and so bypass its permission and metering).
        upstreams: vec![format!("{upstream}/echo")],
        permissions: Default::default(),
        permission: Some("tasks.read".into()),
        strip_prefix: true,
        timeout_ms: 30_000,
    });
    // Ordinary users may call the demo model (the built-in role has no
    // model grant).
    if !config.roles.contains_key("user") {
        let mut grants: Vec<String> = BUILT_IN
            .iter()
            .find(|(name, _)| *name == "user")
            .map(|(_, g)| g.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        grants.push(format!("models.{MODEL}.invoke"));
        config.roles.insert(
            "user".into(),
            RoleConfig {
                permissions: grants,
            },
        );
    }
    Ok(listener)
}

pub async fn serve_upstream(listener: std::net::TcpListener) {
    let config = MockConfig {
        models: vec![MODEL.into()],
        latency: std::time::Duration::ZERO,
        fail_rate: 0.0,
        anthropic_key: None,
        chunk_interval: std::time::Duration::from_millis(20),
    };
    let result = async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tracing::info!(address = %listener.local_addr()?, "demo upstream (mock) listening");
        axum::serve(
            swarmgate_server::without_nagle(listener),
            mock_upstream::router(config),
        )
        .await
    }
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "demo upstream stopped");
    }
}
