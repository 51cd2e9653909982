//! HS256 against RFC 7515 A.1, refused by the provider however the key is dressed up
//! (including as the RFC 8037 Ed25519 public key).

use super::eddsa::{RFC8037_X, rfc8037_decoding_key};
use super::*;

const A1_INPUT: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const A1_KEY: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
const A1_SIG: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

#[test]
fn rfc7515_a1_hs256_vector_checks_with_raw_ring_hmac() {
    install();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &d64(A1_KEY));
    assert!(ring::hmac::verify(&key, A1_INPUT.as_bytes(), &d64(A1_SIG)).is_ok());
}

fn is_hmac_refusal(r: &Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(e) if matches!(e.kind(), ErrorKind::Provider(m) if m == HMAC_REFUSED))
}

#[test]
fn rfc7515_a1_hs256_refused_by_provider() {
    install();
    // The vector is genuine (previous test), yet the provider never says Ok(true).
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let r = verify(
            A1_SIG,
            A1_INPUT.as_bytes(),
            &DecodingKey::from_secret(&d64(A1_KEY)),
            alg,
        );
        assert!(is_hmac_refusal(&r), "{alg:?}: {r:?}");
        let s = sign(
            A1_INPUT.as_bytes(),
            &EncodingKey::from_secret(&d64(A1_KEY)),
            alg,
        );
        assert!(is_hmac_refusal(&s), "{alg:?}");
    }
}

#[test]
fn hs_confusion_vectors_against_rfc8037_key_rejected() {
    install();
    let prefix = "eyJhbGciOiJIUzI1NiJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.";
    let sigs = [
        "QQwDLiq54UNDU3sRHRIjel55pW60FDiRX9Fcr27PK2I",
        "-KEEupmDOlbn3U_ZNXEeHeuukQSQdg0umzPl_ZmYbZg",
        "WCU3d-Afg4HqExkFGOIiPqLTRoPFHfRVKfS1PkK8qos",
        "IrF8BibZdrJiBLoD6upI6oVytJpliHrO1ViTS387xUg",
        "9fGCo2KsiFM1MzooGSa647fcFBPqBAvxTIKej_5QaiA",
        "DmwMbnJABMzFPeP0qUyFKnAc3vyHPqKkShL7uTdls-w",
    ];
    let ed_key = rfc8037_decoding_key();
    let x = d64(RFC8037_X);
    // Plausible ways an attacker might turn the public key into a secret.
    let secrets: Vec<Vec<u8>> = vec![
        x.clone(),
        RFC8037_X.as_bytes().to_vec(),
        crate_jwk_json().into_bytes(),
    ];
    for s in sigs {
        let token = format!("{prefix}{s}");
        let (msg, sig_part) = token.rsplit_once('.').expect("three parts");
        assert_eq!(
            verify(sig_part, msg.as_bytes(), &ed_key, Algorithm::EdDSA),
            Ok(false)
        );
        let hs = verify(sig_part, msg.as_bytes(), &ed_key, Algorithm::HS256);
        assert!(is_hmac_refusal(&hs), "{hs:?}");
        for secret in &secrets {
            let hs = verify(
                sig_part,
                msg.as_bytes(),
                &DecodingKey::from_secret(secret),
                Algorithm::HS256,
            );
            assert!(is_hmac_refusal(&hs));
        }
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &ed_key,
            &jsonwebtoken::Validation::new(Algorithm::EdDSA),
        );
        assert!(decoded.is_err());
    }
}

fn crate_jwk_json() -> String {
    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{RFC8037_X}"}}"#)
}
