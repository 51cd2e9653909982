//! ES256 against RFC 7515 A.3, generated P-256 keys, and ES512 (RFC 7515 A.4), which
//! no key of Tessera's can name.

use super::rsa::JOE_PAYLOAD;
use super::*;
use std::str::FromStr;

const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
const A3_HEADER: &str = "eyJhbGciOiJFUzI1NiJ9";
pub(super) const A3_SIG: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
pub(super) const A3_SIG_MALLEATED: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmU69fgrc8OPGycO0lD3tat_FoFp57SETepkeks4eL_QfA";

pub(super) fn a3_input() -> String {
    format!("{A3_HEADER}.{JOE_PAYLOAD}")
}

pub(super) fn a3_key() -> DecodingKey {
    DecodingKey::from_ec_components(A3_X, A3_Y).expect("x,y")
}

#[test]
fn rfc7515_a3_es256_verifies_through_provider() {
    install();
    // This vector's S is above n/2 ("high S"); JOSE has no low-S rule, so
    // rejecting it would break interop with conforming signers.
    assert_eq!(
        verify(A3_SIG, a3_input().as_bytes(), &a3_key(), Algorithm::ES256),
        Ok(true)
    );
}

#[test]
fn rfc7515_a3_es256_malleated_twin_also_verifies() {
    install();
    // (r, n−s) is an equally valid ECDSA signature. So token bytes are not
    // unique per token: revocation and replay checks must key on `jti`,
    // never on the raw token or signature bytes.
    assert_eq!(
        verify(
            A3_SIG_MALLEATED,
            a3_input().as_bytes(),
            &a3_key(),
            Algorithm::ES256
        ),
        Ok(true)
    );
}

#[test]
fn rfc7515_a3_es256_rejected_encodings() {
    install();
    let sig_bytes = d64(A3_SIG);
    let mut long = sig_bytes.clone();
    long.push(0);
    let rejected = [
        // ASN.1 DER form of the valid signature: JWS requires r‖s.
        "MEUCIA7RIVN5Y2xIPC9_FVgH1AKjsigDOvl8fheBmsMWnqZlAiEAxQoH04w8cOXY8S2vCEpUgKZlkMXyk1Cajz9_ioOjVNU".to_owned(),
        // "Psychic signature" r = s = 0 (CVE-2022-21449).
        "A".repeat(86),
        "MAYCAQACAQA".to_owned(),
        // r = s = n, i.e. zero mod n.
        "_____wAAAAD__________7zm-q2nF56E87nKwvxjJVH_____AAAAAP__________vOb6racXnoTzucrC_GMlUQ".to_owned(),
        e64(&sig_bytes[..63]),
        e64(&long),
    ];
    for s in &rejected {
        assert_eq!(
            verify(s, a3_input().as_bytes(), &a3_key(), Algorithm::ES256),
            Ok(false),
            "{s}"
        );
    }
}

#[test]
fn rfc7515_a3_private_key_matches_public_point() {
    install();
    let pub_point = [vec![4], d64(A3_X), d64(A3_Y)].concat();
    let pair = sig::EcdsaKeyPair::from_private_key_and_public_key(
        &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        &d64(A3_D),
        &pub_point,
        &SystemRandom::new(),
    )
    .expect("A.3 key");
    let s = pair
        .sign(&SystemRandom::new(), a3_input().as_bytes())
        .expect("sign");
    assert_eq!(
        verify(
            &e64(s.as_ref()),
            a3_input().as_bytes(),
            &a3_key(),
            Algorithm::ES256
        ),
        Ok(true)
    );
}

fn ecdsa_round_trip(alg: Algorithm, signing: &'static sig::EcdsaSigningAlgorithm) {
    let rng = SystemRandom::new();
    let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("gen");
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("parse");
    let enc = EncodingKey::from_ec_der(pkcs8.as_ref());
    let dec = DecodingKey::from_ec_der(pair.public_key().as_ref());
    let s = sign(b"h.p", &enc, alg).expect("sign");
    assert_eq!(verify(&s, b"h.p", &dec, alg), Ok(true));
    assert_eq!(verify(&s, b"h.q", &dec, alg), Ok(false));
    forget(pkcs8.as_ref());
}

#[test]
fn es256_round_trip_generated_key() {
    install();
    ecdsa_round_trip(Algorithm::ES256, &sig::ECDSA_P256_SHA256_FIXED_SIGNING);
}

#[test]
fn ed25519_key_handed_over_as_ec_is_an_error_cached_or_not() {
    install();
    let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("gen");
    let bytes = pkcs8.as_ref();
    assert!(sign(b"m", &EncodingKey::from_ec_der(bytes), Algorithm::ES256).is_err());
    assert!(sign(b"m", &EncodingKey::from_ed_der(bytes), Algorithm::EdDSA).is_ok());
    // Now cached as Ed25519: the hit must not bypass the key-class check.
    assert!(sign(b"m", &EncodingKey::from_ec_der(bytes), Algorithm::ES256).is_err());
    forget(bytes);
}

// ---- RFC 7515 A.4 (ES512) ----

#[test]
fn rfc7515_a4_es512_unsupported() {
    install();
    // jsonwebtoken has no P-521 variant, so a token headed
    // eyJhbGciOiJFUzUxMiJ9 ("ES512") cannot even name an algorithm.
    assert_eq!(
        String::from_utf8(d64("eyJhbGciOiJFUzUxMiJ9")).expect("utf8"),
        r#"{"alg":"ES512"}"#
    );
    assert!(Algorithm::from_str("ES512").is_err());
    assert!(jsonwebtoken::decode_header("eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.AAAA").is_err());
}

#[test]
fn key_utils_ec_components_from_private_key() {
    install();
    let rng = SystemRandom::new();
    let signing = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("gen");
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("parse");
    let components = RING_PROVIDER.key_utils.ec_pub_components_from_private_key;
    let (c, x, y) = components(pkcs8.as_ref(), Algorithm::ES256).expect("ec");
    assert_eq!(c, EllipticCurve::P256);
    assert_eq!(x.len(), 32);
    assert_eq!([&[4u8][..], &x, &y].concat(), pair.public_key().as_ref());
    assert!(components(pkcs8.as_ref(), Algorithm::ES384).is_err());
}
