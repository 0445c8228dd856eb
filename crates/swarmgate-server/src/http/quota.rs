//! `/quota`: the limits that apply to the caller, and the operators' view.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use swarmgate_service::agents::{LimitSetUsage, NearExhaustion, QuotaHealth};
use swarmgate_service::monitoring::percent;
use swarmgate_service::quota::ScopeStatus;
use swarmgate_service::Principal;
use utoipa::ToSchema;

use crate::http::error::ApiResult as Result;
use crate::http::AppState;

/// `GET /quota`.
#[derive(Serialize, ToSchema)]
pub struct QuotaBody {
    limits: Vec<StandingBody>,
}

/// One limit set: `{scope, NAME: {limit, used, remaining}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StandingBody {
    pub scope: String,
    #[serde(flatten)]
    pub limits: BTreeMap<&'static str, LimitStanding>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LimitStanding {
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
}

impl From<&ScopeStatus> for StandingBody {
    fn from(s: &ScopeStatus) -> Self {
        Self {
            scope: s.scope.clone(),
            limits: s
                .limits
                .iter()
                .map(|(name, limit, r)| {
                    let standing = LimitStanding {
                        limit: *limit,
                        used: r.used,
                        remaining: r.remaining,
                    };
                    (*name, standing)
                })
                .collect(),
        }
    }
}

#[utoipa::path(get, path = "/quota", tag = "quota",
    responses((status = 200, description = "every limit set that applies to the caller", body = QuotaBody)))]
pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<QuotaBody>> {
    let scopes = state.services.quota.status(&principal).await?;
    let limits = scopes.iter().map(StandingBody::from).collect();
    Ok(Json(QuotaBody { limits }))
}

/// `GET /quota/health`.
#[derive(Serialize, ToSchema)]
#[schema(as = QuotaHealth)]
pub struct HealthBody {
    active_agents: usize,
    limit_sets: Vec<UsageBody>,
    near_exhaustion: Vec<NearBody>,
}

/// One limit set: `{scope, user_id?, NAME: {limit, used, percent}}`.
#[derive(Serialize, ToSchema)]
#[schema(as = LimitSetUsage)]
pub struct UsageBody {
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(flatten)]
    limits: BTreeMap<&'static str, LimitUsage>,
}

#[derive(Serialize, ToSchema)]
pub struct LimitUsage {
    limit: u64,
    used: u64,
    percent: f64,
}

#[derive(Serialize, ToSchema)]
pub struct NearBody {
    session_id: String,
    agent_id: String,
    tokens_used: u64,
    tokens: u64,
}

impl From<LimitSetUsage> for UsageBody {
    fn from(set: LimitSetUsage) -> Self {
        Self {
            scope: set.scope,
            user_id: set.user_id,
            limits: set
                .limits
                .into_iter()
                .map(|(name, limit, used)| {
                    let usage = LimitUsage {
                        limit,
                        used,
                        percent: percent(used, limit),
                    };
                    (name, usage)
                })
                .collect(),
        }
    }
}

impl From<NearExhaustion> for NearBody {
    fn from(n: NearExhaustion) -> Self {
        Self {
            session_id: n.session_id,
            agent_id: n.agent_id,
            tokens_used: n.tokens_used,
            tokens: n.tokens,
        }
    }
}

impl From<QuotaHealth> for HealthBody {
    fn from(h: QuotaHealth) -> Self {
        Self {
            active_agents: h.active_agents,
            limit_sets: h.limit_sets.into_iter().map(UsageBody::from).collect(),
            near_exhaustion: h.near_exhaustion.into_iter().map(NearBody::from).collect(),
        }
    }
}

#[utoipa::path(get, path = "/quota/health", tag = "quota",
    responses((status = 200, description = "live agents' allocations and the limit sets near exhaustion", body = HealthBody)))]
pub async fn health(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<HealthBody>> {
    let health = state.services.agents.health(&principal).await?;
    Ok(Json(health.into()))
}
