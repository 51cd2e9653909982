//! RFC 7638 JWK thumbprints and RFC 7517 public JWKs for the keys Tessera
//! publishes.
//!
//! The canonical JSON is written by hand rather than via serde so that member
//! order and whitespace are exactly RFC 7638 §3.2's (lexicographic, none), which
//! is what makes the thumbprint stable across implementations.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// JWK integers must use the minimum number of octets (RFC 7518 §6.3.1.1), but
/// DER-derived values often carry a sign byte; without this strip the same key
/// would get two thumbprints.
fn minimal_unsigned(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    match bytes.get(zeros..) {
        Some(rest) if !rest.is_empty() => rest,
        // Zero itself is one 0x00 octet.
        _ => bytes.get(..1).unwrap_or(bytes),
    }
}

/// RFC 7638 canonical JSON of an Ed25519 (OKP) public key `x` (32 bytes).
pub fn canonical_ed25519(x: &[u8]) -> String {
    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x))
}

/// RFC 7638 canonical JSON of a P-256 public key from its affine coordinates.
pub fn canonical_ec_p256(x: &[u8], y: &[u8]) -> String {
    format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        b64(x),
        b64(y)
    )
}

/// RFC 7638 canonical JSON of an RSA public key (big-endian `n`, `e`; leading
/// zero octets are dropped).
pub(crate) fn canonical_rsa(n: &[u8], e: &[u8]) -> String {
    format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        b64(minimal_unsigned(e)),
        b64(minimal_unsigned(n))
    )
}

/// RFC 7638 thumbprint (base64url, unpadded) of already-canonical member JSON
/// under any ring digest.
pub(crate) fn thumbprint(canonical_members_json: &str, hash: &'static digest::Algorithm) -> String {
    b64(digest::digest(hash, canonical_members_json.as_bytes()).as_ref())
}

/// SHA-256 RFC 7638 thumbprint of an Ed25519 public key.
pub fn thumbprint_ed25519(x: &[u8]) -> String {
    thumbprint(&canonical_ed25519(x), &digest::SHA256)
}

/// SHA-256 RFC 7638 thumbprint of a P-256 public key.
pub fn thumbprint_ec_p256(x: &[u8], y: &[u8]) -> String {
    thumbprint(&canonical_ec_p256(x, y), &digest::SHA256)
}

/// SHA-256 RFC 7638 thumbprint of an RSA public key.
pub(crate) fn thumbprint_rsa(n: &[u8], e: &[u8]) -> String {
    thumbprint(&canonical_rsa(n, e), &digest::SHA256)
}

/// The public JWK (RFC 7517) for an `"EdDSA"` (32-byte Ed25519 key),
/// `"ES256"` (65-byte uncompressed P-256 point) or `"RS256"`/`"PS256"` (PKCS#1
/// `RSAPublicKey` DER) signing key, or `None` when the
/// algorithm is unsupported or the key has the wrong shape.
pub(crate) fn try_public_jwk(alg: &str, kid: &str, public_key: &[u8]) -> Option<Value> {
    // Built from the public key alone, so no private member (`d`, `p`, …) can
    // ever be present.
    match alg {
        "EdDSA" if public_key.len() == 32 => Some(json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64(public_key),
            "alg": "EdDSA",
            "use": "sig",
            "kid": kid,
        })),
        "ES256" => match public_key.split_first() {
            Some((0x04, xy)) if xy.len() == 64 => {
                let (x, y) = xy.split_at(32);
                Some(json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": b64(x),
                    "y": b64(y),
                    "alg": "ES256",
                    "use": "sig",
                    "kid": kid,
                }))
            }
            _ => None,
        },
        // `public_key` is the PKCS#1 `RSAPublicKey` DER of an imported key.
        "RS256" | "PS256" => {
            let (n, e) = parse_rsa_public_key(public_key)?;
            Some(json!({
                "kty": "RSA",
                "n": b64(minimal_unsigned(&n)),
                "e": b64(minimal_unsigned(&e)),
                "alg": alg,
                "use": "sig",
                "kid": kid,
            }))
        }
        _ => None,
    }
}

/// [`try_public_jwk`] returning `Value::Null` instead of `None` (the tables below
/// compare whole JWKs).
#[cfg(test)]
fn public_jwk(alg: &str, kid: &str, public_key: &[u8]) -> Value {
    try_public_jwk(alg, kid, public_key).unwrap_or(Value::Null)
}

/// `(n, e)` of a DER PKCS#1 `RSAPublicKey` (how [`super::import`] stores an RSA
/// public key), big-endian without sign octets. ring has no public parser for
/// one, so this reads the two-INTEGER SEQUENCE itself, strictly: DER only, no
/// trailing bytes.
pub(crate) fn parse_rsa_public_key(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (body, rest) = der_take(der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (n, body) = der_take(body, 0x02)?;
    let (e, body) = der_take(body, 0x02)?;
    if !body.is_empty() {
        return None;
    }
    Some((der_unsigned(n)?, der_unsigned(e)?))
}

/// Splits one DER TLV with the expected tag off the front of `input`.
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        // 0 is BER's indefinite length; more than 4 length bytes is no key.
        if count == 0 || count > 4 {
            return None;
        }
        let (len_bytes, rest) = rest.split_at_checked(count)?;
        if len_bytes.first() == Some(&0) {
            return None;
        }
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 {
            return None;
        }
        (len, rest)
    };
    rest.split_at_checked(len)
}

/// A DER INTEGER's content as a minimal unsigned big-endian number (what JWK
/// `n`/`e` need); negative or non-minimal encodings are rejected.
fn der_unsigned(int: &[u8]) -> Option<Vec<u8>> {
    match int {
        [] => None,
        [b, ..] if b & 0x80 != 0 => None,
        [0, next, ..] if next & 0x80 == 0 => None,
        [0, rest @ ..] if !rest.is_empty() => Some(rest.to_vec()),
        _ => Some(int.to_vec()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
    use jsonwebtoken::{Algorithm, DecodingKey};

    fn d64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).expect("test vector is base64url")
    }

    const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    const RFC7638_E: &str = "AQAB";
    const RFC7638_SHA256: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    fn a3_point() -> Vec<u8> {
        [vec![4], d64(A3_X), d64(A3_Y)].concat()
    }

    /// A DER TLV with a definite, minimal length (for building test keys).
    pub(in crate::keys) fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
        out
    }

    /// A DER INTEGER holding the unsigned big-endian `bytes`.
    pub(in crate::keys) fn der_uint(bytes: &[u8]) -> Vec<u8> {
        let mut content = Vec::new();
        if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            content.push(0);
        }
        content.extend_from_slice(bytes);
        der_tlv(0x02, &content)
    }

    /// A DER SEQUENCE of already-encoded items.
    pub(in crate::keys) fn der_seq(items: &[Vec<u8>]) -> Vec<u8> {
        der_tlv(0x30, &items.concat())
    }

    /// PKCS#1 `RSAPublicKey` of the RFC 7638 §3.1 key, as import stores it.
    fn rfc7638_public_der() -> Vec<u8> {
        der_seq(&[der_uint(&d64(RFC7638_N)), der_uint(&d64(RFC7638_E))])
    }

    #[test]
    fn public_jwk_rs256_and_ps256_from_the_stored_der() {
        for alg in ["RS256", "PS256"] {
            let der = rfc7638_public_der();
            assert_eq!(
                public_jwk(alg, "k", &der),
                json!({
                    "kty": "RSA",
                    "n": RFC7638_N,
                    "e": RFC7638_E,
                    "alg": alg,
                    "use": "sig",
                    "kid": "k",
                })
            );
        }
    }

    #[test]
    fn rsa_public_key_der_parser_is_strict() {
        let good = rfc7638_public_der();
        assert_eq!(
            parse_rsa_public_key(&good),
            Some((d64(RFC7638_N), d64(RFC7638_E)))
        );
        for n in 0..good.len() {
            assert!(parse_rsa_public_key(&good[..n]).is_none(), "prefix {n}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(parse_rsa_public_key(&trailing).is_none());
        // Negative modulus (no sign byte), non-minimal zero padding, BER length.
        assert!(parse_rsa_public_key(&der_seq(&[der_tlv(2, &[0x80]), der_uint(&[3])])).is_none());
        assert!(parse_rsa_public_key(&der_seq(&[der_tlv(2, &[0, 1]), der_uint(&[3])])).is_none());
        assert!(
            parse_rsa_public_key(&[0x30, 0x80, 0x02, 0x01, 0x01, 0x02, 0x01, 0x03, 0, 0]).is_none()
        );
        assert_eq!(
            parse_rsa_public_key(&der_seq(&[der_uint(&[0xc5]), der_uint(&[3])])),
            Some((vec![0xc5], vec![3]))
        );
        assert_eq!(
            public_jwk("RS256", "k", &good[..good.len() - 1]),
            Value::Null
        );
    }

    #[test]
    fn rfc7638_3_1_rsa_thumbprint_sha256() {
        assert_eq!(
            thumbprint_rsa(&d64(RFC7638_N), &d64(RFC7638_E)),
            RFC7638_SHA256
        );
    }

    #[test]
    fn rfc7638_3_1_rsa_thumbprint_sha384_and_sha512() {
        let canonical = canonical_rsa(&d64(RFC7638_N), &d64(RFC7638_E));
        assert_eq!(
            thumbprint(&canonical, &digest::SHA384),
            "R9_OfJjSjaw8Fuum86UzK5ixTdN9bo9BaqPSiseq89DWfmqCdpSgUHus-cxDUNc8"
        );
        assert_eq!(
            thumbprint(&canonical, &digest::SHA512),
            "DpvEwocfn3FjeWWQjcJHzWrpKTIymKwgoL1xVgQcud48-qZDSRCr1zfWZQdHAJn_ciqXqPTSARyg-L-NyNGpVA"
        );
    }

    #[test]
    fn rfc7638_3_1_canonical_json_is_required_members_sorted_without_whitespace() {
        assert_eq!(
            canonical_rsa(&d64(RFC7638_N), &d64(RFC7638_E)),
            format!(r#"{{"e":"{RFC7638_E}","kty":"RSA","n":"{RFC7638_N}"}}"#)
        );
    }

    #[test]
    fn rfc7638_3_1_adding_alg_and_kid_does_not_change_thumbprint() {
        super::super::provider::install();
        // The §3.1 example JWK as published, with its optional members.
        let jwk: Jwk = serde_json::from_value(json!({
            "kty": "RSA",
            "n": RFC7638_N,
            "e": RFC7638_E,
            "alg": "RS256",
            "kid": "2011-04-29",
        }))
        .expect("jwk");
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint"),
            RFC7638_SHA256
        );
    }

    #[test]
    fn rsa_leading_zero_octets_do_not_change_thumbprint() {
        let n = d64(RFC7638_N);
        let padded_n = [vec![0], n.clone()].concat();
        assert_eq!(
            thumbprint_rsa(&padded_n, &[0, 0, 1, 0, 1]),
            thumbprint_rsa(&n, &[1, 0, 1])
        );
        assert_eq!(minimal_unsigned(&[0, 0]), &[0]);
        assert_eq!(minimal_unsigned(&[]), &[] as &[u8]);
    }

    #[test]
    fn rfc8037_a3_thumbprint_ed25519() {
        assert_eq!(thumbprint_ed25519(&d64(RFC8037_X)), RFC8037_THUMBPRINT);
        assert_eq!(
            canonical_ed25519(&d64(RFC8037_X)),
            format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{RFC8037_X}"}}"#)
        );
    }

    #[test]
    fn rfc7515_a3_p256_thumbprint_matches_jsonwebtoken() {
        super::super::provider::install();
        let ours = thumbprint_ec_p256(&d64(A3_X), &d64(A3_Y));
        let jwk: Jwk = serde_json::from_value(json!({
            "kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y,
        }))
        .expect("jwk");
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint"),
            ours
        );
    }

    #[test]
    fn public_jwk_rfc8037_ed25519_shape() {
        let jwk = public_jwk("EdDSA", "k1", &d64(RFC8037_X));
        assert_eq!(
            jwk,
            json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": RFC8037_X,
                "alg": "EdDSA",
                "use": "sig",
                "kid": "k1",
            })
        );
    }

    #[test]
    fn public_jwk_rfc7515_a3_es256_verifies_a3_signature() {
        super::super::provider::install();
        let value = public_jwk("ES256", "a3", &a3_point());
        assert_eq!(value["x"], A3_X);
        assert_eq!(value["y"], A3_Y);
        assert_eq!(value["use"], "sig");
        // End to end: what we publish is what a relying party can verify with.
        let jwk: Jwk = serde_json::from_value(value).expect("valid JWK");
        let key = DecodingKey::from_jwk(&jwk).expect("decoding key");
        let input = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let sig = "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
        assert_eq!(
            jsonwebtoken::crypto::verify(sig, input.as_bytes(), &key, Algorithm::ES256),
            Ok(true)
        );
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint"),
            thumbprint_ec_p256(&d64(A3_X), &d64(A3_Y))
        );
    }

    #[test]
    fn public_jwk_never_has_private_members() {
        let private = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
        for jwk in [
            public_jwk("EdDSA", "k", &d64(RFC8037_X)),
            public_jwk("ES256", "k", &a3_point()),
        ] {
            let obj = jwk.as_object().expect("object");
            for m in private {
                assert!(!obj.contains_key(m), "{m}");
            }
        }
    }

    #[test]
    fn public_jwk_rejects_wrong_shapes_and_algorithms() {
        let x = d64(RFC8037_X);
        let point = a3_point();
        let mut compressed = vec![0x02];
        compressed.extend_from_slice(&d64(A3_X));
        let mut wrong_tag = point.clone();
        wrong_tag[0] = 0x03;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("EdDSA", x[..31].to_vec()),
            ("EdDSA", [x.clone(), vec![0]].concat()),
            ("EdDSA", vec![]),
            ("ES256", point[1..].to_vec()),
            ("ES256", compressed),
            ("ES256", wrong_tag),
            ("ES256", vec![]),
            ("ES384", point.clone()),
            ("RS256", point.clone()),
            ("HS256", x.clone()),
            ("none", x.clone()),
            ("eddsa", x),
        ];
        for (alg, key) in cases {
            assert_eq!(try_public_jwk(alg, "k", &key), None, "{alg} {}", key.len());
            assert_eq!(public_jwk(alg, "k", &key), Value::Null);
        }
    }
}
