//! `GET /usage`: token usage summed by model, key or user; the caller's
//! own, or everyone's with `usage.read.all`.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use swarmgate_service::usage::UsageQuery;
use swarmgate_service::{Error, Principal};
use swarmgate_store::{UsageGroup, UsageRow};
use utoipa::{IntoParams, ToSchema};

use crate::http::error::ApiResult as Result;
use crate::http::extract::ApiQuery;
use crate::http::page::{ListBody, PageQuery};
use crate::http::time::parse_rfc3339;
use crate::http::AppState;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// RFC 3339.
    since: Option<String>,
    /// RFC 3339.
    until: Option<String>,
    /// model (the default), key or user.
    group_by: Option<String>,
}

/// One group's sums.
#[derive(Serialize, ToSchema)]
#[schema(as = UsageGroupSums)]
pub struct UsageBody {
    group: Option<String>,
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    total_tokens: i64,
}

impl From<UsageRow> for UsageBody {
    fn from(r: UsageRow) -> Self {
        Self {
            group: r.group,
            requests: r.requests,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            total_tokens: r.total_tokens,
        }
    }
}

#[utoipa::path(get, path = "/usage", tag = "usage", params(UsageParams, PageQuery),
    responses((status = 200, description = "sums in group order", body = ListBody<UsageBody>)))]
pub async fn usage(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<UsageParams>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<ListBody<UsageBody>>> {
    let group = match params.group_by.as_deref().unwrap_or("model") {
        "model" => UsageGroup::Model,
        "key" => UsageGroup::Key,
        "user" => UsageGroup::User,
        other => {
            return Err(
                Error::BadRequest(format!("group_by: {other:?} is not model, key or user")).into(),
            )
        }
    };
    let time =
        |name, text: &Option<String>| text.as_deref().map(|t| parse_rfc3339(name, t)).transpose();
    let query = UsageQuery {
        since: time("since", &params.since)?,
        until: time("until", &params.until)?,
        group,
    };
    let page = page.request()?;
    let rows = state
        .services
        .usage
        .summary(&principal, &query, &page)
        .await?;
    Ok(Json(ListBody::of(rows, UsageBody::from)))
}
