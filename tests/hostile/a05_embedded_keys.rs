//! A5. Embedded and remote key headers

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::KeyPair as _;
use serde_json::{Value, json};

use crate::forge::*;
use crate::support::*;

/// A loopback listener that counts connections (the SSRF probe of A5.3/A5.4/A13.5).
async fn canary() -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((_sock, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    (url, hits)
}

#[tokio::test]
async fn a5_embedded_and_remote_keys() {
    let f = Fixture::start().await;
    let (url, hits) = canary().await;
    let t0 = &f.t0;
    let kid = f.mint.kid.clone();
    let other = attacker_ed25519();
    let x = b64(other.public_key().as_ref());
    let other_kid = tessera::keys::jwk::thumbprint_ed25519(other.public_key().as_ref());
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x});
    let jwk_d = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "d": b64(random_bytes(32))});
    let fake_cert = STANDARD.encode(random_bytes(300));
    let mut rows = Vec::new();
    let attacker_headers: Vec<(&str, Value)> = vec![
        (
            "A5.1 jwk = attacker key, attacker kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "jwk": jwk}),
        ),
        (
            "A5.1 jwk = attacker key, T0's kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jwk": jwk}),
        ),
        (
            "A5.1 jwk = attacker key, no kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "jwk": jwk}),
        ),
        (
            "A5.2 jwk with private member d",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "jwk": jwk_d}),
        ),
        (
            "A5.3 jku = loopback JWKS, attacker kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "jku": format!("{url}/jwks.json")}),
        ),
        (
            "A5.3 jku = loopback JWKS, T0's kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jku": format!("{url}/jwks.json")}),
        ),
        (
            "A5.4 x5u = loopback",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "x5u": format!("{url}/cert.pem")}),
        ),
        (
            "A5.5 x5c = attacker chain",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "x5c": [fake_cert]}),
        ),
        (
            "A5.6 x5t",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "x5t": b64(random_bytes(20))}),
        ),
        (
            "A5.6 x5t#S256",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "x5t#S256": b64(random_bytes(32))}),
        ),
        (
            "A13.5 kid = loopback URL",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": format!("{url}/key")}),
        ),
        (
            "A5.3 jku and kid = loopback URL",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": format!("{url}/key"), "jku": url}),
        ),
    ];
    for (name, h) in attacker_headers {
        rows.push(row(
            format!("{name}, attacker-signed"),
            attacker_sign(&other, &h, &t0.p),
        ));
    }
    // The same members on T0's own header with the real key's signature: the service
    // refuses every key-carrying member rather than ignoring it.
    let members: Vec<(&str, Value)> = vec![
        ("jwk", jwk.clone()),
        ("jku", json!(format!("{url}/jwks.json"))),
        ("x5u", json!(format!("{url}/cert.pem"))),
        ("x5c", json!([STANDARD.encode(random_bytes(300))])),
        ("x5t", json!(b64(random_bytes(20)))),
        ("x5t#S256", json!(b64(random_bytes(32)))),
    ];
    for (m, v) in members {
        rows.push(row(
            format!("A5 T0 header plus {m}, signed by the real key (K1)"),
            f.k1_header(m, Some(v)),
        ));
    }
    f.run("A5", rows).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "A5.3/A13.5: outbound connection made"
    );
}
