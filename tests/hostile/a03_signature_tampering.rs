//! A3. Signature tampering, psychic signatures, encodings

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::forge::*;
use crate::support::*;

/// Psychic and DER signature rows for T0 under its own header and ES* headers.
pub(crate) fn psychic_rows(f: &Fixture) -> Vec<Row> {
    let t0 = &f.t0;
    let mut rows = Vec::new();
    let own = f.mint.alg.clone();
    let mut algs = vec![(own.as_str(), 86)];
    for (alg, zeros) in [("ES256", 86), ("ES384", 128), ("ES512", 176)] {
        if alg != own {
            algs.push((alg, zeros));
        }
    }
    for (alg, zeros) in algs {
        let h = b64_json(&json!({"alg": alg, "kid": f.mint.kid, "typ": "at+jwt"}));
        let input = format!("{h}.{}", t0.p);
        rows.push(row(
            format!("A3.9 alg {alg}, all-zero P1363 signature ({zeros} x A)"),
            format!("{input}.{}", "A".repeat(zeros)),
        ));
        rows.push(row(
            format!("A3.10 alg {alg}, psychic DER r=s=0 {PSYCHIC_DER}"),
            format!("{input}.{PSYCHIC_DER}"),
        ));
        if alg == "ES256" || alg == own {
            rows.push(row(
                format!("A3.11 alg {alg}, r=s=n (P-256 order)"),
                format!("{input}.{P256_R_S_N}"),
            ));
            rows.push(row(
                format!("A3.12 alg {alg}, RFC 7515 A.3 signature as DER"),
                format!("{input}.{RFC7515_A3_DER}"),
            ));
        }
    }
    rows.push(row(
        "A3.12 T0's own signature re-encoded as DER",
        t0.with_sig_bytes(&der_signature(&t0.sig())),
    ));
    rows
}

#[tokio::test]
async fn a3_signature_tampering() {
    let f = Fixture::start().await;
    let t0 = &f.t0;
    let sig = t0.sig();
    assert_eq!(sig.len(), 64);
    let mut rows = vec![row("A3.1 empty signature", t0.with_sig(""))];
    for n in [1, 3, 4] {
        rows.push(row(
            format!("A3.2 signature text truncated by {n}"),
            t0.with_sig(&t0.s[..t0.s.len() - n]),
        ));
    }
    rows.push(row(
        "A3.2 signature one byte short",
        t0.with_sig_bytes(&sig[..63]),
    ));
    rows.push(row(
        "A3.2 signature one byte long",
        t0.with_sig_bytes(&[&sig[..], &[0u8][..]].concat()),
    ));
    rows.push(row(
        "A3.2 signature doubled",
        t0.with_sig_bytes(&[&sig[..], &sig[..]].concat()),
    ));
    for (byte, bit) in [(32, 3), (0, 0), (31, 7), (33, 0), (63, 7), (63, 4)] {
        let mut s = sig.clone();
        s[byte] ^= 1 << bit;
        rows.push(row(
            format!("A3.3 bit {bit} of signature byte {byte} flipped"),
            t0.with_sig_bytes(&s),
        ));
    }
    let other = attacker_ed25519();
    let input = format!("{}.{}", t0.h, t0.p);
    rows.push(row(
        "A3.4 T0 signed by another Ed25519 key, T0's kid kept",
        t0.with_sig_bytes(other.sign(input.as_bytes()).as_ref()),
    ));
    // A3.6 one claim changed, original signature.
    let changes: Vec<(&str, Value)> = vec![
        ("sub", json!("admin")),
        ("scope", json!("read:payments write:payments admin")),
        ("aud", json!(["admin-api"])),
        ("exp", json!(t0.payload()["exp"].as_i64().unwrap() + 3600)),
        ("jti", json!("AAAAAAAAAAAAAAAAAAAAAA")),
        ("ver", json!(1)),
        ("client_id", json!("someone-else")),
    ];
    for (claim, v) in changes {
        let mut p = t0.payload();
        p[claim] = v.clone();
        rows.push(row(
            format!("A3.6 {claim} changed to {v}, T0's signature"),
            t0.with_payload(&b64_json(&p)),
        ));
    }
    let reserialized = b64(serde_json::to_string_pretty(&t0.payload()).unwrap());
    rows.push(row(
        "A3.6 same claims re-serialized (other bytes), T0's signature",
        t0.with_payload(&reserialized),
    ));
    // A3.7 the signature covers the protected header.
    let mut h = t0.header();
    h["x"] = json!(1);
    rows.push(row(
        "A3.7 header member x:1 added, T0's signature",
        t0.with_header(&b64_json(&h)),
    ));
    rows.push(row(
        "A3.7 header re-serialized with sorted members, T0's signature",
        t0.with_header(&b64_json(&t0.header())),
    ));
    // A3.8 signatures swapped between two valid tokens.
    let t1 = Jwt::new(&f.s.access_token("bob").await.token);
    rows.push(row("A3.8 T0 with T1's signature", t0.with_sig(&t1.s)));
    rows.push(row("A3.8 T1 with T0's signature", t1.with_sig(&t0.s)));
    rows.push(row(
        "A3.8 T0's header and signature, T1's payload",
        format!("{}.{}.{}", t0.h, t1.p, t0.s),
    ));
    rows.extend(psychic_rows(&f));
    // A3.13 non-canonical S (RFC 8032 §5.1.7: S >= L must be rejected).
    for k in [1, 2, 3] {
        rows.push(row(
            format!("A3.13 S + {k}L"),
            t0.with_sig_bytes(&ed25519_s_plus_l(&sig, k)),
        ));
    }
    let mut s_is_l = sig.clone();
    s_is_l[32..].copy_from_slice(&ED25519_L);
    rows.push(row("A3.13 S = L", t0.with_sig_bytes(&s_is_l)));
    let mut s_ff = sig.clone();
    s_ff[32..].fill(0xff);
    rows.push(row("A3.13 S = 2^256 - 1", t0.with_sig_bytes(&s_ff)));
    let mut r_zero = sig.clone();
    r_zero[..32].fill(0);
    rows.push(row("A3.13 R = 0", t0.with_sig_bytes(&r_zero)));
    // A3.14 RSA-shaped signatures (no RSA key is ever configured here).
    for len in [255, 256, 257] {
        let h = b64_json(&json!({"alg": "RS256", "kid": f.mint.kid, "typ": "at+jwt"}));
        rows.push(row(
            format!("A3.14 alg RS256 with a {len}-byte signature"),
            format!("{h}.{}.{}", t0.p, b64(random_bytes(len))),
        ));
    }
    // A3.15 non-canonical base64url of a valid signature (4 unused bits in 86 chars).
    for v in trailing_bit_variants(&t0.s, 4) {
        rows.push(row(
            format!(
                "A3.15 signature ends in {:?} (trailing-bit variant)",
                &v[v.len() - 1..]
            ),
            t0.with_sig(&v),
        ));
    }
    rows.push(row(
        "A3.15 signature with = padding",
        t0.with_sig(&format!("{}==", t0.s)),
    ));
    rows.push(row(
        "A3.15 signature with one =",
        t0.with_sig(&format!("{}=", t0.s)),
    ));
    let alpha = f.issue_until(|j| j.s.contains(['-', '_'])).await;
    rows.push(row(
        "A3.15 signature in the standard alphabet (+ /)",
        alpha.with_sig(&alpha.s.replace('-', "+").replace('_', "/")),
    ));
    rows.push(row(
        "A3.15 signature in standard base64 with padding",
        alpha.with_sig(&STANDARD.encode(alpha.sig())),
    ));
    rows.push(row(
        "A3.15 signature as hex",
        t0.with_sig(&sig.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    ));
    rows.push(row("A3.8 control: T1 itself", t1.token.clone()).expect(Active));
    f.run("A3", rows).await;
}
