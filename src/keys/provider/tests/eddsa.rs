//! Ed25519 (EdDSA) against RFC 8037 Appendix A.

use super::*;

pub(super) const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
pub(super) const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
pub(super) const RFC8037_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
pub(super) const RFC8037_SIG: &str =
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

/// PKCS#8 v1 (RFC 8410) wrapping of a raw Ed25519 seed.
pub(super) fn ed25519_pkcs8_v1(seed: &[u8]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

pub(super) fn rfc8037_encoding_key() -> EncodingKey {
    EncodingKey::from_ed_der(&ed25519_pkcs8_v1(&d64(RFC8037_D)))
}

pub(super) fn rfc8037_decoding_key() -> DecodingKey {
    DecodingKey::from_ed_components(RFC8037_X).expect("valid x")
}

#[test]
fn rfc8037_a2_public_key_derived_from_seed() {
    install();
    let pair = sig::Ed25519KeyPair::from_seed_unchecked(&d64(RFC8037_D)).expect("seed");
    assert_eq!(e64(pair.public_key().as_ref()), RFC8037_X);
}

#[test]
fn rfc8037_a4_sign_raw_ring() {
    install();
    let pair = sig::Ed25519KeyPair::from_seed_unchecked(&d64(RFC8037_D)).expect("seed");
    assert_eq!(
        e64(pair.sign(RFC8037_INPUT.as_bytes()).as_ref()),
        RFC8037_SIG
    );
}

#[test]
fn rfc8037_a4_sign_through_provider() {
    install();
    let got = sign(
        RFC8037_INPUT.as_bytes(),
        &rfc8037_encoding_key(),
        Algorithm::EdDSA,
    )
    .expect("sign");
    assert_eq!(got, RFC8037_SIG);
}

#[test]
fn rfc8037_a5_verify_through_provider() {
    install();
    let key = rfc8037_decoding_key();
    let ok = verify(
        RFC8037_SIG,
        RFC8037_INPUT.as_bytes(),
        &key,
        Algorithm::EdDSA,
    );
    assert_eq!(ok, Ok(true));
    let tampered = verify(
        RFC8037_SIG,
        b"eyJhbGciOiJFZERTQSJ9.e30",
        &key,
        Algorithm::EdDSA,
    );
    assert_eq!(tampered, Ok(false));
}

#[test]
fn rfc8037_non_canonical_s_plus_l_rejected() {
    install();
    // S+L: the same signature with S lifted by the group order. RFC 8032
    // §5.1.7 requires S < L; accepting it would make signatures malleable.
    let s_plus_l =
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6KLa6_pyZkOh9Vg8wkiO1VhVsPt9g7sVvpAr_MuM0KEg";
    let got = verify(
        s_plus_l,
        RFC8037_INPUT.as_bytes(),
        &rfc8037_decoding_key(),
        Algorithm::EdDSA,
    );
    assert_eq!(got, Ok(false));
}

#[test]
fn eddsa_round_trip_generated_pkcs8_v2() {
    install();
    let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("gen");
    let pair = sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse");
    let key = EncodingKey::from_ed_der(pkcs8.as_ref());
    let s = sign(b"a.b", &key, Algorithm::EdDSA).expect("sign");
    let pubkey = DecodingKey::from_ed_der(pair.public_key().as_ref());
    assert_eq!(verify(&s, b"a.b", &pubkey, Algorithm::EdDSA), Ok(true));
    assert_eq!(verify(&s, b"a.c", &pubkey, Algorithm::EdDSA), Ok(false));
    forget(pkcs8.as_ref());
}

#[test]
fn key_utils_rfc8037_ed_public_from_private_and_jwk_thumbprint() {
    install();
    let pkcs8 = ed25519_pkcs8_v1(&d64(RFC8037_D));
    let x = (RING_PROVIDER.key_utils.ed_pub_components_from_private_key)(
        &pkcs8,
        &EllipticCurve::Ed25519,
    )
    .expect("ed");
    assert_eq!(e64(&x), RFC8037_X);
    assert!(
        (RING_PROVIDER.key_utils.ed_pub_components_from_private_key)(&pkcs8, &EllipticCurve::P256)
            .is_err()
    );
    // jsonwebtoken's own JWK code, running on this provider's key_utils,
    // lands on RFC 8037 A.3's thumbprint.
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
        &EncodingKey::from_ed_der(&pkcs8),
        Algorithm::EdDSA,
    )
    .expect("jwk");
    assert_eq!(
        jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint"),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}
