//! The JSON monitoring view: serves the collector's last snapshot and never
//! measures anything on the request path.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use swarmgate_service::monitoring::{self, Snapshot};
use swarmgate_service::{Error, Principal};
use utoipa::ToSchema;

use crate::http::error::{ApiResult as Result, ErrorBody};
use crate::http::time::rfc3339;
use crate::http::AppState;

#[derive(Serialize, ToSchema)]
pub struct LivenessBody {
    status: &'static str,
    uptime_seconds: u64,
    version: &'static str,
}

/// Liveness only: cheap enough for a load balancer to poll, unlike
/// `/health`, which pings the database.
#[utoipa::path(get, path = "/api/metrics/health", tag = "monitoring", security(()),
    responses((status = 200, description = "alive", body = LivenessBody)))]
pub async fn health(State(state): State<AppState>) -> Json<LivenessBody> {
    Json(LivenessBody {
        status: "ok",
        uptime_seconds: monitoring::uptime_seconds(&state.services.clock),
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[utoipa::path(get, path = "/api/metrics/system", tag = "monitoring",
    responses((status = 200, description = "the host at the last collection", body = SystemBody), (status = 503, description = "no snapshot collected yet", body = ErrorBody)))]
pub async fn system(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<SystemBody>> {
    let snapshot = readable_snapshot(&state, &principal).await?;
    Ok(Json(SystemBody::from(&snapshot.system)))
}

#[utoipa::path(get, path = "/api/metrics/application", tag = "monitoring",
    responses((status = 200, description = "this process at the last collection", body = ApplicationBody), (status = 503, description = "no snapshot collected yet", body = ErrorBody)))]
pub async fn application(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<ApplicationBody>> {
    let snapshot = readable_snapshot(&state, &principal).await?;
    Ok(Json(ApplicationBody::from(&snapshot.application)))
}

#[utoipa::path(get, path = "/api/metrics/all", tag = "monitoring",
    responses((status = 200, description = "system and application", body = AllBody), (status = 503, description = "no snapshot collected yet", body = ErrorBody)))]
pub async fn all(State(state): State<AppState>, principal: Principal) -> Result<Json<AllBody>> {
    let snapshot = readable_snapshot(&state, &principal).await?;
    Ok(Json(AllBody {
        system: SystemBody::from(&snapshot.system),
        application: ApplicationBody::from(&snapshot.application),
    }))
}

/// Admins and analysts read metrics; nodes, which only hold
/// `metrics.report`, may read them too.
async fn readable_snapshot(state: &AppState, principal: &Principal) -> Result<Arc<Snapshot>> {
    let authz = &state.services.authz;
    if !authz.holds(principal, "metrics.report").await {
        authz.require(principal, "metrics.read").await?;
    }
    Ok(monitoring::latest().ok_or_else(|| Error::Unavailable {
        component: "metrics collector",
        detail: "no snapshot collected yet".into(),
    })?)
}

#[derive(Serialize, ToSchema)]
pub struct AllBody {
    system: SystemBody,
    application: ApplicationBody,
}

#[derive(Serialize, ToSchema)]
pub struct SystemBody {
    cpu: CpuBody,
    memory: MemoryBody,
    disk: DiskBody,
    network: NetworkBody,
    platform: PlatformBody,
    uptime_seconds: u64,
    collected_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct CpuBody {
    /// Mean over all cores since the previous pass; `null` on the first.
    percent: Option<f64>,
    count: usize,
}

#[derive(Serialize, ToSchema)]
pub struct MemoryBody {
    total: u64,
    available: u64,
    used: u64,
    percent: f64,
}

#[derive(Serialize, ToSchema)]
pub struct DiskBody {
    mount_point: String,
    total: u64,
    free: u64,
    used: u64,
    percent: f64,
}

#[derive(Serialize, ToSchema)]
pub struct NetworkBody {
    connections: u64,
    established: u64,
}

#[derive(Serialize, ToSchema)]
pub struct PlatformBody {
    system: &'static str,
    release: Option<String>,
    os: Option<String>,
    hostname: Option<String>,
    arch: &'static str,
}

impl From<&monitoring::SystemMetrics> for SystemBody {
    fn from(s: &monitoring::SystemMetrics) -> Self {
        Self {
            cpu: CpuBody {
                percent: s.cpu.percent,
                count: s.cpu.count,
            },
            memory: MemoryBody {
                total: s.memory.total,
                available: s.memory.available,
                used: s.memory.used,
                percent: s.memory.percent,
            },
            disk: DiskBody {
                mount_point: s.disk.mount_point.clone(),
                total: s.disk.total,
                free: s.disk.free,
                used: s.disk.used,
                percent: s.disk.percent,
            },
            network: NetworkBody {
                connections: s.network.connections,
                established: s.network.established,
            },
            platform: PlatformBody {
                system: s.platform.system,
                release: s.platform.release.clone(),
                os: s.platform.os.clone(),
                hostname: s.platform.hostname.clone(),
                arch: s.platform.arch,
            },
            uptime_seconds: s.uptime_seconds,
            collected_at: rfc3339(s.collected_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ApplicationBody {
    version: &'static str,
    process: ProcessBody,
    requests: RequestsBody,
    response_time_ms: ResponseTimesBody,
    uptime_seconds: u64,
    collected_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProcessBody {
    pid: u32,
    cpu_percent: Option<f64>,
    memory_rss_bytes: u64,
    memory_virtual_bytes: u64,
    threads: u64,
    open_files: u64,
}

#[derive(Serialize, ToSchema)]
pub struct RequestsBody {
    total: u64,
    errors: u64,
    server_errors: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ResponseTimesBody {
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
    count: u64,
    window_seconds: f64,
}

impl From<&monitoring::ApplicationMetrics> for ApplicationBody {
    fn from(a: &monitoring::ApplicationMetrics) -> Self {
        let p = &a.process;
        let r = &a.response_time_ms;
        Self {
            version: a.version,
            process: ProcessBody {
                pid: p.pid,
                cpu_percent: p.cpu_percent,
                memory_rss_bytes: p.memory_rss_bytes,
                memory_virtual_bytes: p.memory_virtual_bytes,
                threads: p.threads,
                open_files: p.open_files,
            },
            requests: RequestsBody {
                total: a.requests.total,
                errors: a.requests.errors,
                server_errors: a.requests.server_errors,
            },
            response_time_ms: ResponseTimesBody {
                p50: r.p50,
                p90: r.p90,
                p99: r.p99,
                count: r.count,
                window_seconds: r.window_seconds,
            },
            uptime_seconds: a.uptime_seconds,
            collected_at: rfc3339(a.collected_at),
        }
    }
}
