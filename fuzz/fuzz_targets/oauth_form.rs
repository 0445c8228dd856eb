//! The OAuth2 endpoints' form body and client authentication (HTTP Basic,
//! `client_secret_post`, `private_key_jwt`), and the client-assertion
//! parser and verifier.
//!
//! Input: the `Authorization` header value (empty: none), a newline, then
//! the form body of `POST /auth/token`.
//!
//! Properties: exactly one client authentication method comes out, and
//! it is the one the request used, with the values it sent; a Basic
//! credential made of any id and secret, form-encoded as RFC 6749 says,
//! decodes to that id and secret; an assertion that verifies is the one
//! the seeds carry (nothing else was signed with the fixture key).

#![no_main]

use std::collections::HashMap;

use axum::extract::FromRequest;
use axum::Form;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request};
use libfuzzer_sys::fuzz_target;
use swarmgate_server::http::token::{client_auth, ClientFields, TokenForm};
use swarmgate_service::clients::{ClientAuth, SECRET_BASIC, SECRET_POST};
use swarmgate_tokens::{peek_claims, verify_client_assertion, ASSERTION_TYPE_JWT_BEARER};

fn form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/auth/token")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(body.to_vec()))
        .ok()?;
    swarmgate_fuzz::ready(Form::<T>::from_request(request, &()))
        .ok()
        .map(|Form(f)| f)
}

fn check_assertion(token: &str) {
    let _ = peek_claims(token);
    let audiences = [format!("{}/auth/token", swarmgate_fuzz::ISSUER)];
    let verified = verify_client_assertion(
        token,
        swarmgate_fuzz::client_keys(),
        swarmgate_fuzz::CLIENT_ID,
        &audiences,
        swarmgate_fuzz::ASSERTION_NOW,
    );
    if let Ok(a) = verified {
        assert_eq!(a.jti, swarmgate_fuzz::ASSERTION_JTI, "{token}");
        assert_eq!(a.exp, swarmgate_fuzz::EXP, "{token}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut split = data.splitn(2, |b| *b == b'\n');
    let header = split.next().unwrap_or_default();
    let body = split.next().unwrap_or_default();

    if let Ok(text) = std::str::from_utf8(body) {
        check_assertion(text);
    }
    // Any id and secret survive the Basic encoding.
    let id = String::from_utf8_lossy(header);
    let secret = String::from_utf8_lossy(body);
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            swarmgate_fuzz::form_encode(&id),
            swarmgate_fuzz::form_encode(&secret)
        ))
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&basic).expect("base64 is a header value"),
    );
    match client_auth(&headers, ClientFields::default()) {
        Ok(ClientAuth::Secret {
            client_id,
            secret: got,
            method,
        }) => {
            assert_eq!((client_id.as_str(), got.as_str()), (&*id, &*secret));
            assert_eq!(method, SECRET_BASIC);
        }
        _ => panic!("{basic:?} is a well-formed Basic credential"),
    }

    let _ = form::<TokenForm>(body);
    let Some(fields) = form::<ClientFields>(body) else {
        return;
    };
    // The same fields, to check against; keys are unique, or the form
    // above would have been refused.
    let pairs: HashMap<String, String> =
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
            .expect("a body the extractor read")
            .into_iter()
            .collect();
    let field = |name: &str| pairs.get(name).map(String::as_str);
    let mut headers = HeaderMap::new();
    let mut sent_basic = false;
    if !header.is_empty() {
        if let Ok(value) = HeaderValue::from_bytes(header) {
            sent_basic = value
                .to_str()
                .is_ok_and(|v| v.starts_with("Basic ") || v.starts_with("basic "));
            headers.insert(AUTHORIZATION, value);
        }
    }
    let sent_post = field("client_secret").is_some_and(|s| !s.is_empty());
    let sent_jwt = field("client_assertion").is_some() || field("client_assertion_type").is_some();
    let Ok(auth) = client_auth(&headers, fields) else {
        return;
    };
    let methods = [sent_basic, sent_post, sent_jwt];
    match &auth {
        ClientAuth::None => assert_eq!(methods, [false; 3]),
        ClientAuth::Secret {
            client_id, method, ..
        } if *method == SECRET_BASIC => {
            assert_eq!(methods, [true, false, false]);
            if let Some(form_id) = field("client_id") {
                assert_eq!(form_id, client_id);
            }
        }
        ClientAuth::Secret {
            client_id,
            secret,
            method,
        } => {
            assert_eq!(*method, SECRET_POST);
            assert_eq!(methods, [false, true, false]);
            assert_eq!(field("client_id"), Some(client_id.as_str()));
            assert_eq!(field("client_secret"), Some(secret.as_str()));
        }
        ClientAuth::Jwt {
            client_id,
            assertion,
        } => {
            assert_eq!(methods, [false, false, true]);
            assert_eq!(
                field("client_assertion_type"),
                Some(ASSERTION_TYPE_JWT_BEARER)
            );
            assert_eq!(field("client_assertion"), Some(assertion.as_str()));
            assert!(!assertion.is_empty());
            assert_eq!(field("client_id"), client_id.as_deref());
            check_assertion(assertion);
        }
    }
});
