//! The provider against the RFCs' own vectors (RFC 8037 for Ed25519, RFC 7515
//! A.2/A.3 for RS256 and ES256), the refusals, and the parsed-key cache.

use super::*;
use crate::keys::jwk::tests::{der_seq, der_tlv, der_uint};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::{sign, verify};
use std::str::FromStr;

fn d64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("test vector is base64url")
}

fn e64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

// ---- RFC 8037 Appendix A (Ed25519) ----

const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC8037_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
const RFC8037_SIG: &str =
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

/// PKCS#8 v1 (RFC 8410) wrapping of a raw Ed25519 seed.
fn ed25519_pkcs8_v1(seed: &[u8]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

fn rfc8037_encoding_key() -> EncodingKey {
    EncodingKey::from_ed_der(&ed25519_pkcs8_v1(&d64(RFC8037_D)))
}

fn rfc8037_decoding_key() -> DecodingKey {
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

// ---- RFC 7515 A.2 (RS256) ----

const A2_HEADER: &str = "eyJhbGciOiJSUzI1NiJ9";
const JOE_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_E: &str = "AQAB";
const A2_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
const A2_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const A2_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
const A2_DP: &str = "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0";
const A2_DQ: &str = "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU";
const A2_QI: &str = "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U";
const A2_SIG: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

fn a2_input() -> String {
    format!("{A2_HEADER}.{JOE_PAYLOAD}")
}

/// PKCS#1 `RSAPrivateKey` for the RFC 7515 A.2 key.
fn a2_pkcs1() -> Vec<u8> {
    let mut items = vec![der_uint(&[0])];
    for c in [A2_N, A2_E, A2_D, A2_P, A2_Q, A2_DP, A2_DQ, A2_QI] {
        items.push(der_uint(&d64(c)));
    }
    der_seq(&items)
}

/// PKCS#8 v1 wrapping of [`a2_pkcs1`] (rsaEncryption, NULL parameters).
fn a2_pkcs8() -> Vec<u8> {
    let rsa_encryption = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    der_seq(&[
        der_uint(&[0]),
        der_tlv(0x30, &rsa_encryption),
        der_tlv(0x04, &a2_pkcs1()),
    ])
}

/// PKCS#1 `RSAPublicKey` for the A.2 key.
fn a2_public_der() -> Vec<u8> {
    der_seq(&[der_uint(&d64(A2_N)), der_uint(&d64(A2_E))])
}

#[test]
fn rfc7515_a2_rs256_raw_ring_from_components() {
    install();
    let comps = ring::rsa::KeyPairComponents {
        public_key: ring::rsa::PublicKeyComponents {
            n: d64(A2_N),
            e: d64(A2_E),
        },
        d: d64(A2_D),
        p: d64(A2_P),
        q: d64(A2_Q),
        dP: d64(A2_DP),
        dQ: d64(A2_DQ),
        qInv: d64(A2_QI),
    };
    let pair = sig::RsaKeyPair::from_components(&comps).expect("A.2 key");
    let mut out = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &sig::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        a2_input().as_bytes(),
        &mut out,
    )
    .expect("sign");
    assert_eq!(e64(&out), A2_SIG);
}

#[test]
fn rfc7515_a2_rs256_verify_through_provider() {
    install();
    let input = a2_input();
    let by_components = DecodingKey::from_rsa_components(A2_N, A2_E).expect("n,e");
    assert_eq!(
        verify(A2_SIG, input.as_bytes(), &by_components, Algorithm::RS256),
        Ok(true)
    );
    let by_der = DecodingKey::from_rsa_der(&a2_public_der());
    assert_eq!(
        verify(A2_SIG, input.as_bytes(), &by_der, Algorithm::RS256),
        Ok(true)
    );
    // Same key, other padding: must not cross-verify.
    assert_eq!(
        verify(A2_SIG, input.as_bytes(), &by_components, Algorithm::PS256),
        Ok(false)
    );
}

#[test]
fn rfc7515_a2_rs256_sign_through_provider_pkcs8() {
    install();
    // PKCS#1 v1.5 is deterministic, so the provider must reproduce A.2
    // exactly (the PKCS#1 encoding is covered by the cache test below).
    let got = sign(
        a2_input().as_bytes(),
        &EncodingKey::from_rsa_der(&a2_pkcs8()),
        Algorithm::RS256,
    )
    .expect("sign");
    assert_eq!(got, A2_SIG);
}

#[test]
fn rfc7515_a2_key_rs256_and_ps256_round_trip() {
    install();
    let enc = EncodingKey::from_rsa_der(&a2_pkcs8());
    let dec = DecodingKey::from_rsa_components(A2_N, A2_E).expect("n,e");
    let algs = [Algorithm::RS256, Algorithm::PS256];
    for alg in algs {
        let s = sign(b"h.p", &enc, alg).expect("sign");
        assert_eq!(verify(&s, b"h.p", &dec, alg), Ok(true), "{alg:?}");
        assert_eq!(verify(&s, b"h.q", &dec, alg), Ok(false), "{alg:?}");
        for other in algs.iter().filter(|&&o| o != alg) {
            assert_eq!(
                verify(&s, b"h.p", &dec, *other),
                Ok(false),
                "{alg:?} as {other:?}"
            );
        }
    }
}

// ---- RFC 7515 A.3 (ES256) ----

const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
const A3_HEADER: &str = "eyJhbGciOiJFUzI1NiJ9";
const A3_SIG: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
const A3_SIG_MALLEATED: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmU69fgrc8OPGycO0lD3tat_FoFp57SETepkeks4eL_QfA";

fn a3_input() -> String {
    format!("{A3_HEADER}.{JOE_PAYLOAD}")
}

fn a3_key() -> DecodingKey {
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

// ---- algorithms Tessera never uses ----

fn is_unsupported<T>(r: &Result<T>) -> bool {
    matches!(r, Err(e) if matches!(e.kind(), ErrorKind::UnsupportedAlgorithm))
}

#[test]
fn unused_algorithms_are_refused_for_signing_verifying_and_warming() {
    install();
    let rng = SystemRandom::new();
    let p384 = &sig::ECDSA_P384_SHA384_FIXED_SIGNING;
    let p384_pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(p384, &rng).expect("gen");
    let p384_pair = sig::EcdsaKeyPair::from_pkcs8(p384, p384_pkcs8.as_ref(), &rng).expect("parse");
    // A key of the right family for each, so the refusal is the algorithm's.
    let mut cases = vec![(
        Algorithm::ES384,
        EncodingKey::from_ec_der(p384_pkcs8.as_ref()),
        DecodingKey::from_ec_der(p384_pair.public_key().as_ref()),
        // A genuine ES384 signature, made with ring itself.
        p384_pair
            .sign(&rng, b"h.p")
            .expect("sign")
            .as_ref()
            .to_vec(),
    )];
    for alg in [
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS384,
        Algorithm::PS512,
    ] {
        cases.push((
            alg,
            EncodingKey::from_rsa_der(&a2_pkcs8()),
            DecodingKey::from_rsa_components(A2_N, A2_E).expect("n,e"),
            vec![0x5a; 256],
        ));
    }
    for (alg, enc, dec, signature) in cases {
        let signed = sign(b"h.p", &enc, alg);
        assert!(is_unsupported(&signed), "{alg:?}: {signed:?}");
        assert!(is_unsupported(&warm(alg, enc.as_bytes())), "{alg:?}");
        let verified = verify(&e64(&signature), b"h.p", &dec, alg);
        assert!(is_unsupported(&verified), "{alg:?}: {verified:?}");
    }
    // The same RSA key still signs RS256: the refusal did not touch the cache.
    let enc = EncodingKey::from_rsa_der(&a2_pkcs8());
    assert_eq!(
        sign(a2_input().as_bytes(), &enc, Algorithm::RS256).as_deref(),
        Ok(A2_SIG)
    );
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

// ---- RFC 7515 A.1 (HS256) and HMAC refusal ----

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

// ---- key/algorithm family checks ----

#[test]
fn key_family_mismatch_is_error() {
    install();
    let ed_enc = rfc8037_encoding_key();
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::PS256] {
        assert!(sign(b"m", &ed_enc, alg).is_err(), "{alg:?}");
    }
    let rsa_enc = EncodingKey::from_rsa_der(&a2_pkcs8());
    assert!(sign(b"m", &rsa_enc, Algorithm::EdDSA).is_err());
    assert!(sign(b"m", &rsa_enc, Algorithm::ES256).is_err());

    let ed_dec = rfc8037_decoding_key();
    let rsa_dec = DecodingKey::from_rsa_components(A2_N, A2_E).expect("n,e");
    assert!(
        verify(
            RFC8037_SIG,
            RFC8037_INPUT.as_bytes(),
            &ed_dec,
            Algorithm::ES256
        )
        .is_err()
    );
    assert!(verify(A2_SIG, a2_input().as_bytes(), &rsa_dec, Algorithm::EdDSA).is_err());
    assert!(verify(A3_SIG, a3_input().as_bytes(), &a3_key(), Algorithm::RS256).is_err());
    // Right family, wrong shape: a P-384-sized point offered for ES256.
    let p384_sized = DecodingKey::from_ec_der(&[0x04; 97]);
    assert!(verify(A3_SIG, a3_input().as_bytes(), &p384_sized, Algorithm::ES256).is_err());
}

#[test]
fn garbage_keys_and_signatures_never_panic() {
    install();
    let mut blobs: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0x30], vec![0xff; 300]];
    blobs.extend(
        (0..a2_pkcs8().len())
            .step_by(97)
            .map(|n| a2_pkcs8()[..n].to_vec()),
    );
    blobs.extend((0..48).map(|n| ed25519_pkcs8_v1(&d64(RFC8037_D))[..n].to_vec()));
    blobs.push(vec![0x04; 65]);
    blobs.push(vec![0x04; 97]);
    blobs.push(vec![0x11; 32]);
    let algs = [
        Algorithm::EdDSA,
        Algorithm::ES256,
        Algorithm::RS256,
        Algorithm::PS256,
    ];
    for blob in &blobs {
        for alg in algs {
            let (enc, dec) = match alg {
                Algorithm::EdDSA => (
                    EncodingKey::from_ed_der(blob),
                    DecodingKey::from_ed_der(blob),
                ),
                Algorithm::ES256 => (
                    EncodingKey::from_ec_der(blob),
                    DecodingKey::from_ec_der(blob),
                ),
                _ => (
                    EncodingKey::from_rsa_der(blob),
                    DecodingKey::from_rsa_der(blob),
                ),
            };
            assert!(sign(b"m", &enc, alg).is_err());
            assert!(warm(alg, blob).is_err());
            for sig_len in [0usize, 1, 64, 96, 256] {
                let s = e64(&vec![0x5a; sig_len]);
                assert!(!matches!(verify(&s, b"m", &dec, alg), Ok(true)));
            }
        }
        assert!(rsa_components_from_private_key(blob).is_err());
        assert!(rsa_components_from_public_key(blob).is_err());
        assert!(ec_components_from_private_key(blob, Algorithm::ES256).is_err());
        assert!(ed_public_from_private_key(blob, &EllipticCurve::Ed25519).is_err());
    }
    // Bad base64 in the signature is an error, not a panic.
    assert!(verify("!!", b"m", &rfc8037_decoding_key(), Algorithm::EdDSA).is_err());
}

// ---- parsed-key cache ----

#[test]
fn cache_parses_once_and_forget_drops() {
    install();
    let rng = SystemRandom::new();
    let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("gen");
    let enc = EncodingKey::from_ec_der(pkcs8.as_ref());
    let bytes = pkcs8.as_ref();
    assert_eq!(test_counters::parses(bytes), 0);
    sign(b"one", &enc, Algorithm::ES256).expect("sign");
    sign(b"two", &enc, Algorithm::ES256).expect("sign");
    assert_eq!(test_counters::parses(bytes), 1);
    assert!(SIGNERS.load().contains_key(&cache_key(bytes)));
    assert!(cached_signers() >= 1);

    forget(bytes);
    assert!(!SIGNERS.load().contains_key(&cache_key(bytes)));
    sign(b"three", &enc, Algorithm::ES256).expect("sign");
    assert_eq!(test_counters::parses(bytes), 2);
    forget(bytes);
}

#[test]
fn rfc7515_a2_pkcs1_key_parsed_once_for_rs256_and_ps256() {
    install();
    // Only this test signs with the PKCS#1 encoding, so its counter is ours.
    let der = a2_pkcs1();
    let enc = EncodingKey::from_rsa_der(&der);
    let first = sign(a2_input().as_bytes(), &enc, Algorithm::RS256).expect("sign");
    assert_eq!(first, A2_SIG);
    sign(b"m", &enc, Algorithm::PS256).expect("sign");
    assert_eq!(test_counters::parses(&der), 1);
    forget(&der);
}

#[test]
fn warm_preparses_so_first_sign_hits_cache() {
    install();
    let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("gen");
    let bytes = pkcs8.as_ref();
    warm(Algorithm::EdDSA, bytes).expect("warm");
    assert_eq!(test_counters::parses(bytes), 1);
    sign(b"m", &EncodingKey::from_ed_der(bytes), Algorithm::EdDSA).expect("sign");
    assert_eq!(test_counters::parses(bytes), 1);
    assert!(warm(Algorithm::HS256, bytes).is_err());
    assert!(warm(Algorithm::ES256, bytes).is_err());
    forget(bytes);
}

#[test]
fn cache_cap_starts_a_fresh_map() {
    let mut map: HashMap<CacheKey, u32> = HashMap::new();
    for i in 0..4u8 {
        map = with_entry(&map, [i; 32], u32::from(i), 4);
    }
    assert_eq!(map.len(), 4);
    // Re-inserting a present key must not count as overflow.
    map = with_entry(&map, [0; 32], 9, 4);
    assert_eq!(map.len(), 4);
    map = with_entry(&map, [7; 32], 7, 4);
    assert_eq!(map.len(), 1);
    assert_eq!(map.get(&[7; 32]), Some(&7));
}

#[test]
fn cache_is_keyed_by_digest_not_bytes() {
    let key = cache_key(b"secret key bytes");
    assert_eq!(
        key.as_slice(),
        digest::digest(&digest::SHA256, b"secret key bytes").as_ref()
    );
}

// ---- key_utils ----

#[test]
fn key_utils_rsa_components_from_private_and_public_key() {
    install();
    let utils = &RING_PROVIDER.key_utils;
    for der in [a2_pkcs8(), a2_pkcs1()] {
        let (n, e) = (utils.rsa_pub_components_from_private_key)(&der).expect("rsa");
        assert_eq!((e64(&n), e64(&e)), (A2_N.to_owned(), A2_E.to_owned()));
    }
    let (n, e) = (utils.rsa_pub_components_from_public_key)(&a2_public_der()).expect("rsa");
    assert_eq!((e64(&n), e64(&e)), (A2_N.to_owned(), A2_E.to_owned()));
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

#[test]
fn key_utils_compute_digest() {
    install();
    let f = RING_PROVIDER.key_utils.compute_digest;
    assert_eq!(f(b"abc", ThumbprintHash::SHA256).expect("d").len(), 32);
    assert_eq!(f(b"abc", ThumbprintHash::SHA384).expect("d").len(), 48);
    assert_eq!(
        e64(&f(b"abc", ThumbprintHash::SHA512).expect("d")),
        e64(digest::digest(&digest::SHA512, b"abc").as_ref())
    );
}

// ---- install ----

#[test]
fn install_is_idempotent_under_race() {
    let handles: Vec<_> = (0..8).map(|_| std::thread::spawn(install)).collect();
    for h in handles {
        h.join().expect("install must not panic");
    }
    install();
    install();
}

// ---- verify_jws: the strict verifier's allocation-free path ----

#[test]
fn verify_jws_agrees_with_jsonwebtoken_verify() {
    install();
    let a2 = a2_input();
    let a3 = a3_input();
    let rsa = DecodingKey::from_rsa_components(A2_N, A2_E).expect("n,e");
    let rsa_der = DecodingKey::from_rsa_der(&a2_public_der());
    let ed = rfc8037_decoding_key();
    let ec = a3_key();
    let hs = DecodingKey::from_secret(b"secret");
    let mut flipped = d64(A3_SIG);
    flipped[0] ^= 1;
    let flipped = e64(&flipped);
    let huge = e64(&[0x5a; MAX_SIGNATURE_LEN + 1]);
    let cases: Vec<(&str, &[u8], &DecodingKey, Algorithm)> = vec![
        (RFC8037_SIG, RFC8037_INPUT.as_bytes(), &ed, Algorithm::EdDSA),
        (
            RFC8037_SIG,
            b"eyJhbGciOiJFZERTQSJ9.e30",
            &ed,
            Algorithm::EdDSA,
        ),
        (RFC8037_SIG, RFC8037_INPUT.as_bytes(), &ed, Algorithm::ES256),
        (RFC8037_SIG, RFC8037_INPUT.as_bytes(), &hs, Algorithm::HS256),
        (A2_SIG, a2.as_bytes(), &rsa, Algorithm::RS256),
        (A2_SIG, a2.as_bytes(), &rsa_der, Algorithm::RS256),
        (A2_SIG, a2.as_bytes(), &rsa, Algorithm::PS256),
        (A3_SIG, a3.as_bytes(), &ec, Algorithm::ES256),
        (A3_SIG_MALLEATED, a3.as_bytes(), &ec, Algorithm::ES256),
        (&flipped, a3.as_bytes(), &ec, Algorithm::ES256),
        (A3_SIG, a3.as_bytes(), &ec, Algorithm::ES384),
        (A3_SIG, a3.as_bytes(), &ec, Algorithm::RS256),
        ("!!", RFC8037_INPUT.as_bytes(), &ed, Algorithm::EdDSA),
        ("", RFC8037_INPUT.as_bytes(), &ed, Algorithm::EdDSA),
        (&huge, a2.as_bytes(), &rsa, Algorithm::RS256),
    ];
    for (i, (s, m, k, alg)) in cases.into_iter().enumerate() {
        let expected = matches!(verify(s, m, k, alg), Ok(true));
        assert_eq!(verify_jws(s, m, k, alg), expected, "case {i}");
    }
    // The largest signature any key makes still fits the decoding buffer.
    let mut out = [0u8; MAX_SIGNATURE_LEN];
    let full = e64(&[7u8; MAX_SIGNATURE_LEN]);
    assert_eq!(
        URL_SAFE_NO_PAD.decode_slice(&full, &mut out),
        Ok(MAX_SIGNATURE_LEN)
    );
}
