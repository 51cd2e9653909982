//! The provider against the RFCs' own vectors, one file per algorithm family (RFC 8037
//! for Ed25519 in `eddsa.rs`, RFC 7515 A.2 for RS256 in `rsa.rs`, A.3/A.4 for ES256 and
//! ES512 in `ecdsa.rs`, A.1 and the HMAC refusal in `hmac.rs`); here, the checks across
//! families: algorithms never used, key/algorithm mismatches, garbage input, the
//! parsed-key cache, `install` and `verify_jws`.

use super::key_utils::*;
use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::{sign, verify};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use ring::signature::KeyPair as _;

mod ecdsa;
mod eddsa;
mod hmac;
mod rsa;

use ecdsa::{A3_SIG, A3_SIG_MALLEATED, a3_input, a3_key};
use eddsa::{
    RFC8037_D, RFC8037_INPUT, RFC8037_SIG, ed25519_pkcs8_v1, rfc8037_decoding_key,
    rfc8037_encoding_key,
};
use rsa::{A2_E, A2_N, A2_SIG, a2_input, a2_pkcs8, a2_public_der};

fn d64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("test vector is base64url")
}

fn e64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
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
