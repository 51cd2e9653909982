//! RS256 and PS256 against the RSA key of RFC 7515 A.2.

use super::*;
use crate::keys::jwk::tests::{der_seq, der_tlv, der_uint};

const A2_HEADER: &str = "eyJhbGciOiJSUzI1NiJ9";
pub(super) const JOE_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
pub(super) const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
pub(super) const A2_E: &str = "AQAB";
const A2_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
const A2_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const A2_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
const A2_DP: &str = "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0";
const A2_DQ: &str = "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU";
const A2_QI: &str = "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U";
pub(super) const A2_SIG: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

pub(super) fn a2_input() -> String {
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
pub(super) fn a2_pkcs8() -> Vec<u8> {
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
pub(super) fn a2_public_der() -> Vec<u8> {
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
