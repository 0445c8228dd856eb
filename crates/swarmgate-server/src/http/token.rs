//! The OAuth2 endpoints, form-encoded in, RFC 6749 error bodies out:
//! `POST /auth/token` (grants `password`, `refresh_token`,
//! `client_credentials`), `POST /auth/introspect` (RFC 7662) and
//! `POST /auth/revoke` (RFC 7009). Clients authenticate with HTTP Basic
//! (`client_secret_basic`), form fields (`client_secret_post`) or a signed
//! assertion (`private_key_jwt`); the password grant keeps the lockout and
//! rate limits of `/auth/login`, because both call `Identity::login`.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use swarmgate_core::OAuthClient;
use utoipa::ToSchema;

use swarmgate_service::clients::{
    ActiveToken, ClientAuth, Introspection, SECRET_BASIC, SECRET_POST,
};
use swarmgate_service::{Error, RequestMeta};

use crate::http::IdentityState;

/// Form fields are text: none of them may be `null`.
#[derive(Deserialize, ToSchema)]
pub struct TokenForm {
    #[schema(nullable = false)]
    grant_type: Option<String>,
    #[schema(nullable = false)]
    username: Option<String>,
    #[schema(nullable = false)]
    password: Option<String>,
    #[schema(nullable = false)]
    refresh_token: Option<String>,
    #[schema(nullable = false)]
    scope: Option<String>,
    #[serde(flatten)]
    client: ClientFields,
}

/// Client authentication fields of a form body.
#[derive(Deserialize, Default, ToSchema)]
pub struct ClientFields {
    #[schema(nullable = false)]
    client_id: Option<String>,
    #[schema(nullable = false)]
    client_secret: Option<String>,
    #[schema(nullable = false)]
    client_assertion_type: Option<String>,
    #[schema(nullable = false)]
    client_assertion: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct TokenOnlyForm {
    /// `token_type_hint` is not read: every kind of token is told apart
    /// by its own shape, so an unknown or wrong hint changes nothing.
    #[schema(nullable = false)]
    token: Option<String>,
    #[serde(flatten)]
    client: ClientFields,
}

/// An RFC 6749 section 5.2 error.
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<u64>,
    /// The client tried HTTP Basic: a 401 must challenge for it.
    basic: bool,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
            basic: false,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        let description = e.to_string();
        match e {
            Error::InvalidCredentials
            | Error::InvalidRefreshToken
            | Error::RefreshTokenReused
            | Error::AccountDisabled => {
                OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
            }
            Error::InvalidClient(why) => {
                OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", why)
            }
            Error::OAuth { error, description } => {
                OAuthError::new(StatusCode::BAD_REQUEST, error, description)
            }
            Error::Locked { retry_after_secs } => OAuthError {
                retry_after: Some(retry_after_secs),
                ..OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
            },
            Error::RateLimited { retry_after_secs } => OAuthError {
                retry_after: Some(retry_after_secs),
                ..OAuthError::new(StatusCode::TOO_MANY_REQUESTS, "slow_down", description)
            },
            Error::Unavailable { component, .. } => OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                format!("{component} is unavailable"),
            ),
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error at an OAuth2 endpoint");
                OAuthError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error; see the server log",
                )
            }
            _ => OAuthError::invalid_request(description),
        }
    }
}

/// The body of an RFC 6749 section 5.2 error.
#[derive(Serialize, ToSchema)]
pub struct OAuthErrorBody {
    error: &'static str,
    error_description: String,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorBody {
            error: self.error,
            error_description: self.description,
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.basic {
                r#"Basic realm="swarmgate""#
            } else {
                r#"Bearer realm="swarmgate""#
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// A successful token response (RFC 6749 section 5.1), never cached.
fn no_store(body: impl Serialize) -> Response {
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn required(value: Option<String>, name: &str) -> Result<String, OAuthError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
}

fn parse_form<T>(form: Result<Form<T>, FormRejection>) -> Result<T, OAuthError> {
    form.map(|Form(f)| f).map_err(|e| {
        OAuthError::invalid_request(format!(
            "expected an application/x-www-form-urlencoded body: {}",
            e.body_text()
        ))
    })
}

/// Percent-decodes a Basic credential part (RFC 6749 section 2.3.1 has
/// clients form-encode id and secret before base64).
fn form_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let digits = [bytes.next()?, bytes.next()?];
                if !digits.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(&digits).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// Which client authentication the request used; more than one method at
/// once is refused (RFC 6749 section 2.3).
pub fn client_auth(headers: &HeaderMap, fields: ClientFields) -> Result<ClientAuth, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        });
    let bad_basic = || OAuthError {
        basic: true,
        ..OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "malformed HTTP Basic credentials",
        )
    };
    let mut found = Vec::new();
    let fields_client_id = fields.client_id.clone();
    if let Some(encoded) = basic {
        let decoded = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(bad_basic)?;
        let (id, secret) = decoded.split_once(':').ok_or_else(bad_basic)?;
        found.push(ClientAuth::Secret {
            client_id: form_decode(id).ok_or_else(bad_basic)?,
            secret: form_decode(secret).ok_or_else(bad_basic)?,
            method: SECRET_BASIC,
        });
    }
    // Public clients often send an empty secret: that is no secret at all.
    if let Some(secret) = fields.client_secret.filter(|s| !s.is_empty()) {
        let client_id = required(fields.client_id.clone(), "client_id")?;
        found.push(ClientAuth::Secret {
            client_id,
            secret,
            method: SECRET_POST,
        });
    }
    if fields.client_assertion.is_some() || fields.client_assertion_type.is_some() {
        if fields.client_assertion_type.as_deref()
            != Some(swarmgate_tokens::ASSERTION_TYPE_JWT_BEARER)
        {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion_type must be {}",
                swarmgate_tokens::ASSERTION_TYPE_JWT_BEARER
            )));
        }
        found.push(ClientAuth::Jwt {
            client_id: fields.client_id,
            assertion: required(fields.client_assertion, "client_assertion")?,
        });
    }
    let named = |auth: &ClientAuth| match auth {
        ClientAuth::Secret { client_id, .. } => Some(client_id.clone()),
        _ => None,
    };
    if let (Some(form_id), Some(basic_id)) = (&fields_client_id, found.first().and_then(named)) {
        if *form_id != basic_id {
            return Err(OAuthError::invalid_request(
                "client_id does not match the authenticated client",
            ));
        }
    }
    match found.len() {
        0 => Ok(ClientAuth::None),
        1 => Ok(found.remove(0)),
        _ => Err(OAuthError::invalid_request(
            "use exactly one client authentication method",
        )),
    }
}

/// Authenticates the request's client; failures keep the Basic challenge.
async fn authenticated_client(
    identity: &IdentityState,
    auth: &ClientAuth,
) -> Result<Option<OAuthClient>, OAuthError> {
    let basic = matches!(auth, ClientAuth::Secret { method, .. } if *method == SECRET_BASIC);
    identity
        .authenticate_client(auth)
        .await
        .map_err(|e| OAuthError {
            basic,
            ..OAuthError::from(e)
        })
}

fn allows_grant(client: &Option<OAuthClient>, grant: &str) -> Result<(), OAuthError> {
    match client {
        Some(c) if !c.grant_types.iter().any(|g| g == grant) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            format!("this client may not use the {grant} grant"),
        )),
        _ => Ok(()),
    }
}

/// A token response (RFC 6749 section 5.1). A refresh token comes with
/// the password and refresh_token grants, a scope with client_credentials.
#[derive(Serialize, ToSchema)]
pub struct GrantBody {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

#[utoipa::path(post, path = "/auth/token", tag = "oauth",
    security((), ("client_secret_basic" = [])),
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "a token (RFC 6749 section 5.1)", body = GrantBody),
        (status = 400, description = "invalid_request, invalid_grant, unauthorized_client or unsupported_grant_type", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody),
        (status = 429, description = "slow_down: too many password grants from this address", body = OAuthErrorBody),
        (status = 500, description = "server_error", body = OAuthErrorBody),
        (status = 503, description = "temporarily_unavailable", body = OAuthErrorBody),
    ))]
pub async fn token(
    State(identity): State<IdentityState>,
    meta: RequestMeta,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    match grant(identity, meta, headers, form).await {
        Ok(body) => no_store(body),
        Err(e) => e.into_response(),
    }
}

async fn grant(
    identity: IdentityState,
    meta: RequestMeta,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<GrantBody, OAuthError> {
    let form = parse_form(form)?;
    let grant_type = required(form.grant_type, "grant_type")?;
    let auth = client_auth(&headers, form.client)?;
    let client = authenticated_client(&identity, &auth).await?;
    match grant_type.as_str() {
        "password" | "refresh_token" => {
            allows_grant(&client, &grant_type)?;
            let pair = if grant_type == "password" {
                let username = required(form.username, "username")?;
                let password = required(form.password, "password")?;
                identity.login(&username, password, &meta).await?
            } else {
                let refresh = required(form.refresh_token, "refresh_token")?;
                identity.refresh(&refresh, &meta).await?
            };
            Ok(GrantBody {
                access_token: pair.access_token,
                token_type: "Bearer",
                expires_in: pair.expires_in,
                refresh_token: Some(pair.refresh_token),
                scope: None,
            })
        }
        "client_credentials" => {
            let client = client.ok_or_else(|| {
                OAuthError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client_credentials needs client authentication",
                )
            })?;
            let issued = identity
                .client_credentials(&client, form.scope.as_deref(), &meta)
                .await?;
            Ok(GrantBody {
                access_token: issued.access_token,
                token_type: "Bearer",
                expires_in: issued.expires_in,
                refresh_token: None,
                scope: issued.scope,
            })
        }
        other => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {other:?} is not supported here"),
        )),
    }
}

/// An introspection answer: `{"active": false}` or an active token.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum IntrospectionAnswer {
    Active(Box<IntrospectionBody>),
    Inactive(InactiveBody),
}

/// `deny_unknown_fields` closes the schema (it does nothing when
/// serialising), so an active answer matches only its own branch.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InactiveBody {
    active: bool,
}

/// `POST /auth/introspect`: for authenticated (confidential) clients.
#[utoipa::path(post, path = "/auth/introspect", tag = "oauth",
    security(("client_secret_basic" = []), ()),
    request_body(content = TokenOnlyForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "RFC 7662: the token's state", body = IntrospectionAnswer),
        (status = 400, description = "invalid_request", body = OAuthErrorBody),
        (status = 401, description = "invalid_client: introspection needs client authentication", body = OAuthErrorBody),
        (status = 429, description = "slow_down", body = OAuthErrorBody),
        (status = 500, description = "server_error", body = OAuthErrorBody),
        (status = 503, description = "temporarily_unavailable", body = OAuthErrorBody),
    ))]
pub async fn introspect(
    State(identity): State<IdentityState>,
    headers: HeaderMap,
    form: Result<Form<TokenOnlyForm>, FormRejection>,
) -> Response {
    let result = async {
        let form = parse_form(form)?;
        let auth = client_auth(&headers, form.client)?;
        if matches!(auth, ClientAuth::None) {
            return Err(OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "introspection needs client authentication",
            ));
        }
        authenticated_client(&identity, &auth).await?;
        let token = required(form.token, "token")?;
        Ok(identity.introspect(&token).await?)
    }
    .await;
    match result {
        Ok(Introspection::Inactive) => no_store(IntrospectionAnswer::Inactive(InactiveBody {
            active: false,
        })),
        Ok(Introspection::Active(token)) => no_store(IntrospectionAnswer::Active(Box::new(
            IntrospectionBody::from(*token),
        ))),
        Err(e) => e.into_response(),
    }
}

/// An active token, as RFC 7662 section 2.2 describes it.
#[derive(Serialize, ToSchema)]
pub struct IntrospectionBody {
    active: bool,
    token_type: &'static str,
    sub: String,
    username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_method: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    /// An agent: the user it acts for.
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<Act>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Act {
    sub: String,
}

impl From<ActiveToken> for IntrospectionBody {
    fn from(t: ActiveToken) -> Self {
        Self {
            active: true,
            token_type: t.token_type,
            sub: t.sub,
            username: t.username,
            role: t.role,
            scope: t.scope,
            auth_method: t.auth_method,
            key_id: t.key_id,
            exp: t.exp,
            iat: t.iat,
            nbf: t.nbf,
            iss: t.iss,
            aud: t.aud,
            jti: t.jti,
            client_id: t.client_id,
            node_id: t.node_id,
            act: t.act_sub.map(|sub| Act { sub }),
            sid: t.sid,
        }
    }
}

/// The empty object `/auth/revoke` answers with.
#[derive(Serialize, ToSchema)]
pub struct RevokedBody {}

/// `POST /auth/revoke`: 200 with an empty body whether or not the token
/// was valid (RFC 7009 section 2.2).
#[utoipa::path(post, path = "/auth/revoke", tag = "oauth",
    security((), ("client_secret_basic" = [])),
    request_body(content = TokenOnlyForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "RFC 7009: revoked, or it was not valid", body = RevokedBody),
        (status = 400, description = "invalid_request", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody),
        (status = 429, description = "slow_down", body = OAuthErrorBody),
        (status = 500, description = "server_error", body = OAuthErrorBody),
        (status = 503, description = "temporarily_unavailable", body = OAuthErrorBody),
    ))]
pub async fn revoke(
    State(identity): State<IdentityState>,
    meta: RequestMeta,
    headers: HeaderMap,
    form: Result<Form<TokenOnlyForm>, FormRejection>,
) -> Response {
    let result = async {
        let form = parse_form(form)?;
        let auth = client_auth(&headers, form.client)?;
        let client = authenticated_client(&identity, &auth).await?;
        let token = required(form.token, "token")?;
        identity
            .revoke_token(&token, client.as_ref(), &meta)
            .await?;
        Ok::<_, OAuthError>(())
    }
    .await;
    match result {
        Ok(()) => no_store(RevokedBody {}),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::form_decode;

    #[test]
    fn basic_parts_are_form_decoded() {
        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(form_decode("plain").as_deref(), Some("plain"));
        assert_eq!(form_decode("bad%4"), None);
        assert_eq!(form_decode("bad%zz"), None);
    }
}
