//! The credential a request presents (`X-API-Key`, or `Authorization:
//! Bearer`) and the access-token verifier a bearer token goes to.
//!
//! Input: one byte of flags (bit 0: the value is sent as `X-API-Key`; bit
//! 1: as both headers), then the header value.
//!
//! Properties: the credential handed on is a trimmed, non-empty piece of
//! the header's text; `X-API-Key` wins over `Authorization`; a bearer
//! token needs the scheme `Bearer` in any case; a token that verifies
//! carries exactly the claims of the seeds (nothing else was ever signed
//! with the fixture keys, so anything else verifying is a forgery).

#![no_main]

use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use swarmgate_service::Presented;

fn verify_each(token: &str) {
    for tokens in swarmgate_fuzz::access_tokens() {
        if let Ok(claims) = tokens.verify(token) {
            assert_eq!(claims, swarmgate_fuzz::access_claims(), "{token}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, value)) = data.split_first() else {
        return;
    };
    // The verifier also sees tokens that never were a header (form fields
    // of /auth/introspect and /auth/revoke).
    if let Ok(text) = std::str::from_utf8(value) {
        verify_each(text);
    }
    let Ok(header) = HeaderValue::from_bytes(value) else {
        return;
    };
    let api_key = flags & 1 != 0 || flags & 2 != 0;
    let (mut parts, ()) = http::Request::new(()).into_parts();
    if api_key {
        parts
            .headers
            .insert(HeaderName::from_static("x-api-key"), header.clone());
    }
    if !api_key || flags & 2 != 0 {
        parts.headers.insert(AUTHORIZATION, header.clone());
    }
    let Ok(presented) = swarmgate_server::http::extract::presented(&parts) else {
        return;
    };
    let text = header
        .to_str()
        .expect("a credential is read from a text header");
    let credential = match presented {
        Presented::ApiKey(key) => {
            assert!(api_key, "an API key without X-API-Key");
            key
        }
        Presented::Bearer(token) => {
            assert!(!api_key, "Authorization chosen over X-API-Key");
            let (scheme, _) = text.split_once(' ').expect("a scheme before the token");
            assert!(scheme.eq_ignore_ascii_case("bearer"), "{text:?}");
            token
        }
    };
    assert!(!credential.is_empty(), "{text:?}");
    assert_eq!(credential, credential.trim(), "{text:?}");
    assert!(text.contains(credential), "{text:?}");
    verify_each(credential);
});
