//! ES256 keys, and a key ring holding two key types (A2.4, A3.9–A3.12, A3.16, A4.8)

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;
use tessera::proto::RotateSigningKeyRequest;

use crate::a02_algorithm_confusion::hs_confusion_rows;
use crate::a03_signature_tampering::psychic_rows;
use crate::common::mint::{Minter, decode};
use crate::common::{TestServer, authed, test_config};
use crate::forge::*;
use crate::support::*;

/// An EdDSA server restarted with `signing_alg = ES256` and rotated: the ring holds a
/// retired Ed25519 key (still verifying) and an active P-256 key.
async fn mixed_key_server(tmp: &tempfile::TempDir) -> (TestServer, String, String) {
    let clock = tessera::clock::Clock::system();
    let mut s = TestServer::start_with(test_config(tmp.path()), clock.clone()).await;
    let ed_token = s.access_token("alice").await.token;
    s.stop().await;
    let mut cfg = test_config(tmp.path());
    cfg.signing_alg = tessera::config::SigningAlg::ES256;
    let s = TestServer::start_with(cfg, clock).await;
    let ec_kid = s
        .keys()
        .await
        .rotate_signing_key(authed(
            RotateSigningKeyRequest { rotate_now: true },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .kid;
    let ed_kid = decode(&ed_token).0["kid"].as_str().unwrap().to_string();
    (s, ed_token, format!("{ed_kid} {ec_kid}"))
}

#[tokio::test]
async fn es256_and_mixed_key_types() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, ed_token, kids) = mixed_key_server(&tmp).await;
    let (ed_kid, ec_kid) = kids.split_once(' ').unwrap();
    let f = Fixture::on(s).await;
    assert_eq!(f.mint.alg, "ES256");
    assert_eq!(f.mint.kid, ec_kid);
    let ed = Minter::for_kid(&f.s, ed_kid);
    let t0 = f.t0.clone();
    let sig = t0.sig();
    assert_eq!(sig.len(), 64);
    let (r, s_) = sig.split_at(32);
    let twin_sig = [r, &p256_neg(s_)].concat();
    let twin = t0.with_sig_bytes(&twin_sig);
    let mut n_plus_1 = hex(P256_N);
    n_plus_1[31] += 1;

    let mut rows = vec![
        row("control: the retired Ed25519 key's token", ed_token.clone()).expect(Active),
        row("control: T0 (ES256) re-signed (K1)", f.k1(|_, _| {})).expect(Active),
        // A3.16: (r, n−s) is itself a valid signature of the same token (same jti).
        row("A3.16 control: T0 with s := n - s verifies", twin.clone()).expect(Active),
        row(
            "A3.12 T0's signature as DER",
            t0.with_sig_bytes(&der_signature(&sig)),
        ),
        row("A3.12 63-byte P1363", t0.with_sig_bytes(&sig[..63])),
        row(
            "A3.12 65-byte P1363 (leading zero)",
            t0.with_sig_bytes(&[&[0u8][..], &sig[..]].concat()),
        ),
        row(
            "A3.12 65-byte P1363 (trailing zero)",
            t0.with_sig_bytes(&[&sig[..], &[0u8][..]].concat()),
        ),
        row(
            "A3.12 r and s swapped",
            t0.with_sig_bytes(&[s_, r].concat()),
        ),
        row(
            "A3.12 r = 0",
            t0.with_sig_bytes(&[&[0u8; 32][..], s_].concat()),
        ),
        row(
            "A3.12 s = 0",
            t0.with_sig_bytes(&[r, &[0u8; 32][..]].concat()),
        ),
        row(
            "A3.12 s = n",
            t0.with_sig_bytes(&[r, &hex(P256_N)[..]].concat()),
        ),
        row(
            "A3.12 s = n + 1",
            t0.with_sig_bytes(&[r, &n_plus_1[..]].concat()),
        ),
    ];
    rows.extend(psychic_rows(&f));
    for v in trailing_bit_variants(&t0.s, 4) {
        rows.push(row(
            "A3.15 ES256 signature trailing-bit variant",
            t0.with_sig(&v),
        ));
    }
    // A3.4 another P-256 key, T0's kid.
    let other_doc =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let other = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        other_doc.as_ref(),
        &SystemRandom::new(),
    )
    .unwrap();
    let other_sig = other
        .sign(
            &SystemRandom::new(),
            format!("{}.{}", t0.h, t0.p).as_bytes(),
        )
        .unwrap();
    rows.push(row(
        "A3.4 T0 signed by another P-256 key",
        t0.with_sig_bytes(other_sig.as_ref()),
    ));
    // A2.4/A2.1–A2.7 with the EC key's forms (points, SPKI, JWK, OpenSSH).
    rows.extend(hs_confusion_rows(&f).await);
    // A2.8 cross-family swaps of T0's signature.
    for alg in [
        "EdDSA", "ES384", "ES512", "RS256", "PS256", "HS256", "ES256K",
    ] {
        let h = b64_json(&json!({"alg": alg, "kid": ec_kid, "typ": "at+jwt"}));
        rows.push(row(
            format!("A2.8 ES256 signature under alg {alg}"),
            t0.with_header(&h),
        ));
        rows.push(row(
            format!("A2.8 alg {alg}, P-256 key signs it (K1)"),
            f.k1_header("alg", Some(json!(alg))),
        ));
    }
    // A4.8 a real kid of the other key type.
    let ed_p = Jwt::new(&ed_token);
    let ed_hdr = |kid: &str, alg: &str| json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
    rows.push(row(
        "A4.8 EdDSA header with the P-256 kid, Ed25519 key signs",
        ed.sign_json(&ed_hdr(ec_kid, "EdDSA"), &ed_p.payload()),
    ));
    rows.push(row(
        "A4.8 ES256 header with the Ed25519 kid, P-256 key signs",
        f.mint.sign_json(&ed_hdr(ed_kid, "ES256"), &t0.payload()),
    ));
    rows.push(row(
        "A4.8 EdDSA header with the Ed25519 kid, P-256 key signs",
        f.mint.sign_json(&ed_hdr(ed_kid, "EdDSA"), &t0.payload()),
    ));
    rows.push(row(
        "A4.8 ES256 header with the P-256 kid, Ed25519 key signs",
        ed.sign_json(&ed_hdr(ec_kid, "ES256"), &t0.payload()),
    ));
    rows.push(row(
        "A4.8 Ed25519 token with its kid swapped to the P-256 key",
        ed_p.with_header(&b64_json(&ed_hdr(ec_kid, "EdDSA"))),
    ));
    rows.push(
        row(
            "A4.8 control: Ed25519 key with its own kid (K1)",
            ed.sign_json(&ed_hdr(ed_kid, "EdDSA"), &t0.payload()),
        )
        .expect(Active),
    );
    f.run("ES256 + mixed key types", rows).await;

    // A3.16 / A12.9: revoking T0 revokes its (r, n−s) twin, and the other way round.
    f.revoke(&t0.token).await;
    assert!(!f.active(&t0.token).await, "A12.1 T0");
    assert!(
        !f.active(&twin).await,
        "A3.16/A12.9 twin of a revoked token"
    );
    let t1 = Jwt::new(&f.s.access_token("alice").await.token);
    let sig1 = t1.sig();
    let (r1, s1) = sig1.split_at(32);
    let t1_twin = t1.with_sig_bytes(&[r1, &p256_neg(s1)[..]].concat());
    assert!(f.active(&t1_twin).await);
    f.revoke(&t1_twin).await;
    assert!(
        !f.active(&t1.token).await,
        "A12.9 revoking the twin revokes T1"
    );
    f.assert_healthy().await;
}
