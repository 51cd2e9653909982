//! A2. Algorithm and key confusion

use serde_json::{Value, json};

use crate::forge::*;
use crate::support::*;

/// Every form in which the public key might be (mis)used as an HMAC secret.
fn hmac_key_forms(
    jwk: &Value,
    jwks_text: &str,
    raw: &[u8],
) -> Vec<(&'static str, String, Vec<u8>)> {
    let mut forms: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let ed = raw.len() == 32;
    let spki_prefix = if ed {
        hex("302a300506032b6570032100")
    } else {
        hex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
    };
    let der = [spki_prefix, raw.to_vec()].concat();
    forms.push((
        "A2.1",
        "PEM SPKI with trailing \\n".into(),
        pem(&der, "\n", true),
    ));
    forms.push((
        "A2.2",
        "PEM SPKI without trailing \\n".into(),
        pem(&der, "\n", false),
    ));
    forms.push(("A2.2", "PEM SPKI with CRLF".into(), pem(&der, "\r\n", true)));
    forms.push(("A2.3", "DER SPKI".into(), der));
    if ed {
        forms.push(("A2.4", "raw 32-byte x".into(), raw.to_vec()));
    } else {
        forms.push(("A2.4", "65-byte uncompressed point".into(), raw.to_vec()));
        let mut compressed = vec![2 + (raw[64] & 1)];
        compressed.extend_from_slice(&raw[1..33]);
        forms.push(("A2.4", "33-byte compressed point".into(), compressed));
        forms.push(("A2.4", "raw x‖y".into(), raw[1..].to_vec()));
    }
    forms.push(("A2.5", "JWK JSON text".into(), jwk.to_string().into_bytes()));
    let canonical = if ed {
        tessera::keys::jwk::canonical_ed25519(raw)
    } else {
        tessera::keys::jwk::canonical_ec_p256(&raw[1..33], &raw[33..65])
    };
    forms.push((
        "A2.5",
        "RFC 7638 canonical JWK".into(),
        canonical.into_bytes(),
    ));
    forms.push((
        "A2.5",
        "JWKS document text".into(),
        jwks_text.as_bytes().to_vec(),
    ));
    forms.push((
        "A2.5",
        "base64url text of x".into(),
        jwk["x"].as_str().unwrap().as_bytes().to_vec(),
    ));
    let ssh = if ed {
        format!("ssh-ed25519 {}", ssh_blob(&[b"ssh-ed25519", raw]))
    } else {
        format!(
            "ecdsa-sha2-nistp256 {}",
            ssh_blob(&[b"ecdsa-sha2-nistp256", b"nistp256", raw])
        )
    };
    forms.push((
        "A2.6",
        "OpenSSH public-key line".into(),
        ssh.clone().into_bytes(),
    ));
    forms.push((
        "A2.6",
        "OpenSSH line with comment and \\n".into(),
        format!("{ssh} ops@tessera\n").into_bytes(),
    ));
    forms
}

/// A2.1–A2.7 for the fixture's key: HS256/384/512 keyed with every public-key form,
/// under the bare `{"alg":"HSxxx"}` header and under T0's header with only `alg` changed.
pub(crate) async fn hs_confusion_rows(f: &Fixture) -> Vec<Row> {
    let (jwk, jwks_text) = f.published_jwk().await;
    let raw = f.mint.public_key();
    let mut rows = Vec::new();
    for alg in ["HS256", "HS384", "HS512"] {
        let prefix = if alg == "HS256" { "" } else { "A2.7/" };
        let bare = b64(format!(r#"{{"alg":"{alg}"}}"#));
        let t0_like = b64_json(&json!({"alg": alg, "kid": f.mint.kid, "typ": "at+jwt"}));
        for (id, what, key) in hmac_key_forms(&jwk, &jwks_text, &raw) {
            for (hname, h) in [("bare header", &bare), ("T0 header", &t0_like)] {
                rows.push(row(
                    format!("{prefix}{id} {alg} keyed with {what} ({hname})"),
                    hmac_token(alg, &key, h, &f.t0.p),
                ));
            }
        }
    }
    rows
}

#[tokio::test]
async fn a2_algorithm_confusion() {
    let f = Fixture::start().await;
    let (jwk, _) = f.published_jwk().await;
    assert_eq!(unb64(jwk["x"].as_str().unwrap()), f.mint.public_key());
    let mut rows = hs_confusion_rows(&f).await;
    // A2.8: T0's signature under another algorithm's name; and the real key's
    // signature under another name (the algorithm is bound to the kid, not the header).
    for alg in [
        "ES256", "ES384", "ES512", "RS256", "PS256", "HS256", "Ed25519", "Ed448", "EdDSA ",
    ] {
        let h = b64_json(&json!({"alg": alg, "kid": f.mint.kid, "typ": "at+jwt"}));
        rows.push(row(
            format!("A2.8 alg {alg:?}, T0's signature"),
            f.t0.with_header(&h),
        ));
        rows.push(row(
            format!("A2.8 alg {alg:?}, signed by the real key (K1)"),
            f.k1_header("alg", Some(json!(alg))),
        ));
    }
    // A2.9: HS256 with guessable secrets (the provider refuses HMAC outright, so the
    // whole of jwt_tool's jwt-common.txt would fare the same; these are its classics).
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("64 zero bytes".into(), vec![0; 64]),
    ];
    for s in [
        "secret",
        "your-256-bit-secret",
        "password",
        "123456",
        "changeme",
        "jwt",
        "key",
        "test",
        "admin",
        "secretkey",
        "s3cr3t",
        "tessera",
        "supersecret",
        "default",
        "1",
    ] {
        secrets.push((format!("{s:?}"), s.as_bytes().to_vec()));
    }
    let t0_like = b64_json(&json!({"alg": "HS256", "kid": f.mint.kid, "typ": "at+jwt"}));
    for (name, key) in secrets {
        rows.push(row(
            format!("A2.9 HS256 with secret {name} (T0 header)"),
            hmac_token("HS256", &key, &t0_like, &f.t0.p),
        ));
        rows.push(row(
            format!("A2.9 HS256 with secret {name} (bare header)"),
            hmac_token("HS256", &key, "eyJhbGciOiJIUzI1NiJ9", &f.t0.p),
        ));
    }
    f.run("A2", rows).await;
}
