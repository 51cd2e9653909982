//! The OAuth form parsing of `/oauth2/token` (and introspect/revoke): the body through
//! `service::oauth::Form::parse`, its parameters through `get`/`list`, and client
//! authentication through `client_key` with an `Authorization` header from the input.
//!
//! Input: `flags, [len, header bytes…], body…`. Bit 0 of `flags` adds an
//! `Authorization` header made of the next `len` bytes (when they form a valid header
//! value); bit 1 drops the form content type.
//!
//! Whatever the input: no panic, and a form that parses names each parameter once.

#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use tessera::test_support::oauth_form::{Form, client_key};

/// Every parameter the token endpoint reads.
const PARAMS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "audience",
    "refresh_token",
    "code",
    "code_verifier",
    "redirect_uri",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "token",
    "token_type_hint",
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    if flags & 2 == 0 {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    if flags & 1 != 0 {
        let Some((&len, tail)) = rest.split_first() else {
            return;
        };
        let (auth, body) = tail.split_at(usize::from(len).min(tail.len()));
        if let Ok(v) = HeaderValue::from_bytes(auth) {
            headers.insert(header::AUTHORIZATION, v);
        }
        rest = body;
    }
    let Ok(form) = Form::parse(&headers, rest) else {
        return;
    };
    // The same body as plain pairs: each name once, each value what `get` returns.
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(rest).expect("a body Form accepts is a form");
    for (i, (k, v)) in pairs.iter().enumerate() {
        assert!(pairs[..i].iter().all(|(k2, _)| k2 != k), "{k} twice");
        assert_eq!(form.get(k), v);
    }
    for p in PARAMS {
        let _ = form.get(p);
        // A list that parses holds no empty entry and no whitespace inside an entry.
        if let Ok(items) = form.list(p) {
            for item in items {
                assert!(!item.is_empty(), "empty list entry in {p}");
                assert!(!item.chars().any(char::is_whitespace), "whitespace in {p}");
            }
        }
    }
    if let Ok(Some((key, _client_id))) = client_key(&headers, &form) {
        // A credential came from somewhere the caller put it: Basic, Bearer or the form.
        assert!(
            headers.contains_key(header::AUTHORIZATION) || form.get("client_secret") == key,
            "client key from nowhere"
        );
    }
});
