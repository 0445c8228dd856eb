//! `GET /usage`: token usage summed by model, key or user; the caller's
//! own, or everyone's with `usage.read.all`.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use swarmgate_store::UsageGroup;

use crate::clock::now_secs;
use crate::error::{Error, Result};
use crate::http::extract::ApiQuery;
use crate::http::AppState;
use crate::identity::Principal;

#[derive(Deserialize)]
pub struct UsageQuery {
    since: Option<String>,
    until: Option<String>,
    group_by: Option<String>,
}

fn rfc3339(name: &str, text: &str) -> Result<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| Error::BadRequest(format!("{name}: give an RFC 3339 time")))
}

pub async fn usage(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<Value>> {
    let group = match query.group_by.as_deref().unwrap_or("model") {
        "model" => UsageGroup::Model,
        "key" => UsageGroup::Key,
        "user" => UsageGroup::User,
        other => {
            return Err(Error::BadRequest(format!(
                "group_by: {other:?} is not model, key or user"
            )))
        }
    };
    let since = query
        .since
        .as_deref()
        .map(|t| rfc3339("since", t))
        .transpose()?
        .unwrap_or(0);
    let until = query
        .until
        .as_deref()
        .map(|t| rfc3339("until", t))
        .transpose()?
        .unwrap_or(now_secs() + 1);
    let everyone = principal.allows("usage.read.all", None);
    // What this instance still holds in memory counts too.
    state.gateway.usage.flush().await;
    let rows = state
        .gateway
        .usage
        .store()
        .usage_summary(
            (!everyone).then_some(principal.user_id.as_str()),
            since,
            until,
            group,
        )
        .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "group": r.group,
                "requests": r.requests,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "total_tokens": r.total_tokens,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}
