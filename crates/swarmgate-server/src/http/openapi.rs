//! `GET /openapi.json`: the OpenAPI 3.1 document of everything [`router`]
//! serves, generated from the handlers' `#[utoipa::path]` annotations and
//! the wire bodies beside them. Each handler names the answers that are its
//! own; the answers every operation of a kind shares (a credential refused,
//! a JSON body rejected, storage unavailable) come from the one place that
//! produces them, and are added here once rather than on fifty handlers.
//!
//! [`router`]: super::router

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Object, Schema, SchemaType};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, ClientCredentials, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Scopes,
    SecurityScheme,
};
use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::error::ErrorBody;
use super::{
    admin, agents, anthropic, api_keys, auth, clients, monitoring, nodes, openai, quota, system,
    token, usage,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "swarmgate",
        description = "The zero-trust front door of an AI agent swarm: identity, \
            authorization, quotas, and the gateway to LLM servers and swarm services. \
            Any credential works everywhere: a JWT or an API key as `Authorization: \
            Bearer`, or an API key as `X-API-Key`."
    ),
    paths(
        auth::register,
        auth::login,
        auth::refresh,
        auth::logout,
        auth::me,
        auth::change_password,
        token::token,
        token::introspect,
        token::revoke,
        nodes::token,
        nodes::revoke_tokens,
        nodes::register,
        nodes::heartbeat,
        nodes::report,
        nodes::list,
        auth::verify_permission,
        auth::roles,
        api_keys::create,
        api_keys::list,
        api_keys::revoke,
        admin::list_users,
        admin::get_user,
        admin::update_user,
        admin::delete_user,
        admin::unlock_user,
        admin::set_limits,
        agents::spawn,
        agents::list,
        agents::get,
        agents::release,
        agents::heartbeat,
        quota::status,
        quota::health,
        admin::audit,
        clients::create,
        clients::list,
        clients::delete,
        openai::list_models,
        openai::call,
        anthropic::messages,
        anthropic::count_tokens,
        usage::usage,
        system::metrics,
        system::health,
        monitoring::health,
        monitoring::system,
        monitoring::application,
        monitoring::all,
        system::jwks,
        system::openid_configuration,
        system::authorization_server_metadata,
        openapi_json,
        configured_route,
    ),
    // Reached only through a map's values, which utoipa does not follow.
    components(schemas(ErrorBody, quota::LimitStanding, quota::LimitUsage)),
    security(
        ("bearer_jwt" = []),
        ("api_key_bearer" = []),
        ("api_key_header" = []),
        ("oauth2_client_credentials" = []),
    ),
    modifiers(&SecuritySchemes, &Aliases, &SharedResponses, &OperationIds)
)]
struct ApiDoc;

/// The document, built once.
static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_json().unwrap_or_default());

/// The document as a value, for tests.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/openapi.json", tag = "discovery", security(()),
    responses((status = 200, description = "this document (OpenAPI 3.1)", body = Value)))]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// Any path outside swarmgate's own API that a `[[routes]]` entry of the
/// configuration matches is proxied to the route's upstreams; this
/// operation stands for all of them. It is never called: it only carries
/// the annotation.
#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/{path}",
    tag = "gateway",
    description = "Configured routes: a path of a `[[routes]]` entry (it may hold more \
        segments than one) is proxied to that route's upstreams, which answer as they do. \
        The caller is authenticated before the path is looked up, so an anonymous \
        caller cannot tell configured routes from unknown paths.",
    params(("path" = String, Path, description = "the path of a configured route")),
    responses(
        (status = 400, description = "a path with . or .. segments", body = ErrorBody),
        (status = 404, description = "no configured route matches", body = ErrorBody),
        (status = 429, description = "the route's rate or quota is exhausted", body = ErrorBody),
        (status = 502, description = "the upstream failed", body = ErrorBody),
        (status = 504, description = "the upstream timed out", body = ErrorBody),
        (status = "default", description = "whatever the upstream answers",
            content((UpstreamAnswer = "*/*"))),
    ))]
pub fn configured_route() {}

/// Whatever an upstream answers: any JSON value (or, streamed, events).
pub struct UpstreamAnswer;

impl PartialSchema for UpstreamAnswer {
    fn schema() -> RefOr<Schema> {
        Schema::Object(Object::with_type(SchemaType::AnyValue)).into()
    }
}

impl ToSchema for UpstreamAnswer {}

/// The body of an LLM call: the upstream API's own request (OpenAI's or
/// Anthropic's), of which the gateway reads only the model.
#[derive(Deserialize, ToSchema)]
pub struct ModelCall {
    /// The configured model (or, for `/v1/messages`, the Anthropic model).
    pub model: String,
}

/// [`swarmgate_core::LimitSet`] on the wire: the domain type stays free of
/// the document (a test keeps the two in step).
#[derive(Deserialize, ToSchema)]
#[schema(as = LimitSet)]
#[serde(deny_unknown_fields)]
pub struct LimitSetSchema {
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub rpm: Option<u64>,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub tpm: Option<u64>,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub tokens_per_day: Option<u64>,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub max_concurrent: Option<u64>,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub max_agents: Option<u64>,
    /// What a call over a limit does: `reject` (the default, a 429 at once)
    /// or `queue` (wait for capacity, then 429).
    #[schema(nullable = false)]
    pub on_limit: Option<OnLimitSchema>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = OnLimit)]
#[serde(rename_all = "lowercase")]
pub enum OnLimitSchema {
    Reject,
    Queue,
}

/// [`swarmgate_core::limits::AgentBudget`] on the wire.
#[derive(Deserialize, ToSchema)]
#[schema(as = AgentBudget)]
#[serde(deny_unknown_fields)]
pub struct AgentBudgetSchema {
    /// Tokens the agent may use in all.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub tokens: Option<u64>,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub rpm: Option<u64>,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub tpm: Option<u64>,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub max_concurrent: Option<u64>,
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |format: &str, description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "bearer_jwt",
            bearer(
                "JWT",
                "An access token from /auth/login, /auth/token or an agent spawn.",
            ),
        );
        components.add_security_scheme(
            "api_key_bearer",
            bearer("API key", "An API key (`sg_…`) from /auth/api-keys."),
        );
        components.add_security_scheme(
            "api_key_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key (`sg_…`) from /auth/api-keys.",
            ))),
        );
        components.add_security_scheme(
            "oauth2_client_credentials",
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::ClientCredentials(ClientCredentials::new(
                    "/auth/token",
                    Scopes::new(),
                ))],
                "A registered OAuth2 client's token; the scopes are those the client was \
                 registered with.",
            )),
        );
        components.add_security_scheme(
            "client_secret_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "An OAuth2 client's id and secret (client_secret_basic); \
                         client_secret_post and private_key_jwt go in the form.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Paths the router serves with the handler of another path.
const ALIASES: [(&str, &str); 6] = [
    ("/auth/login", "/api/auth/login"),
    ("/auth/me", "/api/auth/me"),
    ("/auth/token", "/api/auth/token"),
    ("/auth/nodes/token", "/api/auth/node/token"),
    ("/v1/chat/completions", "/v1/completions"),
    ("/v1/chat/completions", "/v1/embeddings"),
];

struct Aliases;

impl Modify for Aliases {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, alias) in ALIASES {
            if let Some(item) = openapi.paths.paths.get(path).cloned() {
                openapi.paths.paths.insert(alias.to_string(), item);
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("patch", &mut item.patch),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
}

/// Unique ids: the handlers' names repeat across modules (`list`,
/// `create`) and an alias repeats its path's.
struct OperationIds;

impl Modify for OperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let name: String = path
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let name = name
                .split('_')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>();
            for (method, op) in operations(item) {
                op.operation_id = Some(format!("{method}_{}", name.join("_")));
            }
        }
    }
}

fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
        .into()
}

/// The answers that come from the extractors and the error mapping, not
/// from any one handler.
struct SharedResponses;

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for (_, op) in operations(item) {
                let oauth = op.tags.iter().flatten().any(|t| t == "oauth");
                if !oauth {
                    add_shared(op);
                }
            }
        }
    }
}

fn add_shared(op: &mut Operation) {
    let authenticated = op.security.is_none();
    let json_body = op
        .request_body
        .as_ref()
        .is_some_and(|b: &RequestBody| b.content.contains_key("application/json"));
    let query = op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.parameter_in == ParameterIn::Query);
    let responses = &mut op.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error(description));
    };
    if json_body {
        add(
            "400",
            "bad_request: the body is not JSON, or not sent as application/json",
        );
        add("413", "payload_too_large: the body is over the limit");
        add(
            "422",
            "validation_failed: the body has the wrong shape or a bad value (`field` names it)",
        );
    }
    if query {
        add(
            "400",
            "bad_request: a malformed query parameter, or a cursor this server did not issue",
        );
    }
    if authenticated {
        add(
            "401",
            "missing_credentials, invalid_token, session_revoked or invalid_api_key",
        );
        add(
            "403",
            "forbidden: the caller lacks the permission, or its account is disabled",
        );
    }
    add("500", "internal_error (details are in the server log)");
    add(
        "503",
        "service_unavailable: the database or the shared state does not answer",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(name: &str) -> Vec<String> {
        let doc = serde_json::to_value(document()).unwrap();
        let schema = &doc["components"]["schemas"][name]["properties"];
        let mut names: Vec<String> = schema.as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    fn keys(value: serde_json::Value) -> Vec<String> {
        let mut names: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    #[test]
    fn the_limit_schemas_name_every_field_of_the_domain_types() {
        let full = swarmgate_core::LimitSet {
            rpm: Some(1),
            tpm: Some(1),
            tokens_per_day: Some(1),
            max_concurrent: Some(1),
            max_agents: Some(1),
            on_limit: swarmgate_core::limits::OnLimit::Queue,
        };
        assert_eq!(
            properties("LimitSet"),
            keys(serde_json::to_value(full).unwrap())
        );
        let budget = swarmgate_core::limits::AgentBudget {
            tokens: Some(1),
            rpm: Some(1),
            tpm: Some(1),
            max_concurrent: Some(1),
        };
        assert_eq!(
            properties("AgentBudget"),
            keys(serde_json::to_value(budget).unwrap())
        );
    }

    #[test]
    fn every_reference_resolves() {
        let text = serde_json::to_string(&document()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(
                schemas.contains_key(name),
                "{name} is referenced, not defined"
            );
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut ids = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                ids.push(op["operationId"].as_str().unwrap().to_string());
            }
        }
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count);
    }
}
