//! `swarmgate quota …` (the operator's view of limits and agent sessions,
//! against the configured database and Redis) and `swarmgate auth test`
//! (a credential checked against a running gateway).

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use swarmgate_server::http::quota::StandingBody;
use swarmgate_server::{App, Settings};
use swarmgate_service::agents::InfoSubject;
use swarmgate_service::quota::ScopeStatus;

use crate::QuotaCommand;

/// Without Redis the live quota state is inside the running server: a
/// separate process would see it empty (and, cleaning up, release every
/// session as idle).
fn require_shared_state(settings: &Settings, what: &str) -> anyhow::Result<()> {
    if settings.redis_url.is_none() {
        bail!(
            "{what} needs the shared quota state (REDIS_URL): without it the counters live inside \
             the running server; ask it instead with GET /quota, GET /quota/health or \
             GET /agents/sessions/ID (idle sessions are released by the server itself)"
        );
    }
    Ok(())
}

/// What the JSON `v` holds at `pointer` (RFC 6901); `null` when nothing.
fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&Value::Null)
}

fn scopes_json(scopes: &[ScopeStatus]) -> Vec<StandingBody> {
    scopes.iter().map(StandingBody::from).collect()
}

fn print_scopes(scopes: &[ScopeStatus]) {
    if scopes.is_empty() {
        println!("  no limits apply");
    }
    for s in scopes {
        let parts: Vec<String> = s
            .limits
            .iter()
            .map(|(name, limit, r)| format!("{name} {}/{limit}", r.used))
            .collect();
        println!("  {:<40} {}", s.scope, parts.join("  "));
    }
}

pub async fn run(settings: Settings, command: QuotaCommand, json: bool) -> anyhow::Result<()> {
    match command {
        QuotaCommand::Status => status(settings, json).await,
        QuotaCommand::Info { user, key, agent } => {
            let subject = match (user, key, agent) {
                (Some(u), None, None) => InfoSubject::User(u),
                (None, Some(k), None) => InfoSubject::Key(k),
                (None, None, Some(a)) => InfoSubject::Agent(a),
                _ => bail!("name exactly one of --user, --key, --agent"),
            };
            require_shared_state(&settings, "quota info")?;
            let app = App::build(settings).await?;
            let (who, scopes) = app
                .services()
                .agents
                .info(subject)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            if json {
                let body = json!({ "subject": who, "limits": scopes_json(&scopes) });
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                println!("{who}");
                print_scopes(&scopes);
            }
            Ok(())
        }
        QuotaCommand::Cleanup => {
            require_shared_state(&settings, "quota cleanup")?;
            let app = App::build(settings).await?;
            let released = app
                .services()
                .agents
                .sweep()
                .await
                .map_err(|e| anyhow!("{e}"))?;
            if json {
                println!("{}", json!({ "released": released }));
            } else {
                println!("released {released} idle or expired agent session(s)");
            }
            Ok(())
        }
    }
}

/// `swarmgate quota status`: the shared state, live agent sessions, role
/// limits and provider profiles.
async fn status(settings: Settings, json: bool) -> anyhow::Result<()> {
    let shared = settings.redis_url.is_some();
    let role_limits = settings.quota.role_limits.clone();
    // Seed 003's status names how the provider key is paid for.
    let profiles: Vec<Value> = settings
        .anthropic
        .iter()
        .map(|p| json!({ "name": p.name, "mode": p.mode, "limits": p.limits }))
        .collect();
    let app = App::build(settings).await?;
    let sessions = app
        .services()
        .agents
        .live_sessions()
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let health = app.services().identity.health().await;
    let body = json!({
        "healthy": health.healthy(),
        "shared_state": if shared { "redis" } else { "in-process" },
        "active_agents": sessions,
        "role_limits": role_limits,
        "profiles": profiles,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    println!(
        "healthy: {}\nshared state: {}\nactive agent sessions: {sessions}",
        at(&body, "/healthy"),
        at(&body, "/shared_state")
    );
    if role_limits.is_empty() {
        println!("role limits: none configured");
    }
    for (role, limits) in &role_limits {
        println!("role limits {role}: {}", serde_json::to_string(limits)?);
    }
    for p in &profiles {
        println!(
            "profile {} ({}): limits {}",
            at(p, "/name").as_str().unwrap_or("?"),
            at(p, "/mode").as_str().unwrap_or("?"),
            at(p, "/limits")
        );
    }
    Ok(())
}

/// `swarmgate auth test`: who a credential is at a running gateway, what
/// it may do, and the limits that apply to it.
pub async fn auth_test(url: &str, token: &str, json: bool) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let base = url.trim_end_matches('/');
    let me = client
        .get(format!("{base}/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {base}"))?;
    let status = me.status();
    let me: Value = me.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = at(&me, "/error/message")
            .as_str()
            .unwrap_or("no error message");
        bail!("the gateway refused the credential: {status}: {message}");
    }
    let quota: Value = client
        .get(format!("{base}/quota"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await
        .unwrap_or(Value::Null);
    if json {
        let body = json!({ "me": me, "quota": quota });
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    print_who(&me);
    print_limits(&quota);
    Ok(())
}

/// Who `/auth/me` says the credential is, and what it may do.
fn print_who(me: &Value) {
    let user = if at(me, "/user").is_object() {
        at(me, "/user")
    } else {
        me
    };
    let text = |v: &Value, pointer: &str| at(v, pointer).as_str().unwrap_or("?").to_string();
    if let Some(agent) = at(me, "/agent_id").as_str() {
        println!(
            "ok: agent {agent} (session {}) acting for {} ({})",
            text(me, "/session_id"),
            text(user, "/username"),
            text(user, "/id"),
        );
    } else {
        let role = at(user, "/role").as_str().or(at(me, "/role").as_str());
        println!(
            "ok: {} ({}), role {}, by {}",
            text(user, "/username"),
            text(user, "/id"),
            role.unwrap_or("?"),
            text(me, "/auth_method"),
        );
    }
    let list = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    println!("role permissions: {}", list(at(me, "/permissions")));
    for narrowing in ["key_permissions", "agent_permissions"] {
        let granted = at(me, &format!("/{narrowing}"));
        if granted.is_array() {
            println!("{}: {}", narrowing.replace('_', " "), list(granted));
        }
    }
}

/// The limits `/quota` says apply.
fn print_limits(quota: &Value) {
    let limits = at(quota, "/limits").as_array().cloned().unwrap_or_default();
    if limits.is_empty() {
        println!("limits: none apply");
    }
    for l in limits {
        let parts: Vec<String> = l
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "scope")
            .map(|(k, v)| format!("{k} {}/{}", at(v, "/used"), at(v, "/limit")))
            .collect();
        println!(
            "limits {}: {}",
            at(&l, "/scope").as_str().unwrap_or("?"),
            parts.join("  ")
        );
    }
}
