//! A12. Revocation

use serde_json::json;
use tessera::proto::{BumpTokenVersionRequest, IntrospectResponse};
use tonic::Code;

use crate::common::authed;
use crate::forge::*;
use crate::support::*;

#[tokio::test]
async fn a12_revocation() {
    let f = Fixture::start().await;
    let t0 = f.t0.clone();
    let now = f.now();

    // A12.2 (B10.1): Revoke of garbage, forgeries and unknown tokens succeeds and
    // changes nothing — in particular a forgery carrying T0's jti does not revoke T0.
    let forged_same_jti: Vec<(&str, String)> = vec![
        ("garbage", "garbage".into()),
        (
            "alg none with T0's payload",
            format!("eyJhbGciOiJub25lIn0.{}.", t0.p),
        ),
        (
            "T0 with S + L",
            t0.with_sig_bytes(&ed25519_s_plus_l(&t0.sig(), 1)),
        ),
        ("T0 with sub changed, T0's signature", {
            let mut p = t0.payload();
            p["sub"] = json!("mallory");
            t0.with_payload(&b64_json(&p))
        }),
        (
            "expired K1 token with T0's jti",
            f.k1_claim("exp", Some(json!(now - 1))),
        ),
        (
            "K1 token with T0's jti and a foreign iss",
            f.k1_claim("iss", Some(json!("https://evil.test"))),
        ),
        (
            "HS256 forgery with T0's payload",
            hmac_token("HS256", b"", "eyJhbGciOiJIUzI1NiJ9", &t0.p),
        ),
        (
            "unknown API key",
            with_checksum(&format!(
                "tsk_test_0123456789abcdef_{}",
                b64(random_bytes(32))
            )),
        ),
        (
            "unknown refresh token",
            format!("tsr_{}", b64(random_bytes(32))),
        ),
        ("SQL metacharacters", "' OR '1'='1".into()),
        ("a lone NUL", "\0".into()),
    ];
    let mut failures = Vec::new();
    for (name, token) in &forged_same_jti {
        for hint in ["", "access_token", "bogus"] {
            if let Err(e) = f.revoke_as(token, hint, &f.s.admin_key).await {
                failures.push(format!("A12.2 revoke {name} (hint {hint:?}): {e:?}"));
            }
        }
        if !f.active(&t0.token).await {
            failures.push(format!("A12.2 revoke {name}: T0 was revoked by a forgery"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let e = f.revoke_as("", "", &f.s.admin_key).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "A12.2 empty revoke");
    let e = f
        .revoke_as(&"A".repeat(9000), "", &f.s.admin_key)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "A12.2 oversize revoke");

    // A12.9 (EdDSA form): a second, equivalent encoding of T0 — same claims and jti,
    // header re-serialized — is genuinely valid before the revocation...
    let twin = f.k1(|h, _| h["typ"] = json!("application/at+jwt"));
    let twin2 = f.mint.sign_raw(
        serde_json::to_string_pretty(&t0.header())
            .unwrap()
            .as_bytes(),
        serde_json::to_string_pretty(&t0.payload())
            .unwrap()
            .as_bytes(),
    );
    assert!(
        f.active(&twin).await && f.active(&twin2).await,
        "A12.9 control: twins valid"
    );
    // A12.4 policy: a caller without tessera:revoke is refused and changes nothing;
    // any holder of tessera:revoke may revoke any token (Revoke is an operator RPC).
    let introspector = f.s.api_key(&["tessera:introspect"]).await.token;
    let e = f.revoke_as(&t0.token, "", &introspector).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "A12.4/B10.3");
    assert!(
        f.active(&t0.token).await,
        "A12.4 refused revoke changed nothing"
    );
    // A12.1 ... and revocation is immediate, and keyed on the jti.
    let revoker = f.s.api_key(&["tessera:revoke"]).await.token;
    f.revoke_as(&t0.token, "", &revoker).await.unwrap();
    let inactive = |name: &'static str, token: String| (name, token);
    let after: Vec<(&str, String)> = vec![
        inactive("A12.1 T0 right after Revoke", t0.token.clone()),
        inactive(
            "A12.9 re-serialized twin of T0 (typ spelling)",
            twin.clone(),
        ),
        inactive(
            "A12.9 re-serialized twin of T0 (pretty JSON)",
            twin2.clone(),
        ),
        inactive("A12.9 T0 re-signed unchanged", f.k1(|_, _| {})),
        inactive(
            "A12.9 trailing-bit variant of T0's signature",
            t0.with_sig(&trailing_bit_variants(&t0.s, 4)[0]),
        ),
    ];
    for (name, token) in &after {
        assert_eq!(
            f.introspect(token, "", &f.s.admin_key).await.unwrap(),
            IntrospectResponse::default(),
            "{name}"
        );
    }
    // A12.3 a second revoke succeeds.
    f.revoke(&t0.token).await;
    f.revoke(&twin).await;
    // A12.9 the other way round: revoking the twin revokes the original.
    let t1 = f.s.access_token("alice").await.token;
    let t1_twin = f
        .mint
        .tweak(&t1, |h, _| h["typ"] = json!("application/at+jwt"));
    f.revoke(&t1_twin).await;
    assert!(!f.active(&t1).await, "A12.9 revoking the twin revokes T1");

    // A12.5 revoking a refresh token revokes the access tokens of its grant.
    let g = f.issue_with_refresh("grant").await;
    let other = f.s.access_token("grant").await.token;
    f.revoke_as(&g.refresh_token, "access_token", &f.s.admin_key)
        .await
        .unwrap();
    assert!(
        !f.active(&g.refresh_token).await,
        "A12.5/B10.2 hint miss still revokes"
    );
    assert!(!f.active(&g.token).await, "A12.5 access token of the grant");
    assert!(f.active(&other).await, "A12.5 same subject, other grant");
    // B10.5 policy: revoking an access token blocks its jti only; the refresh token
    // of its grant stays usable (RFC 7009 allows, but does not require, revoking it).
    let g2 = f.issue_with_refresh("grant").await;
    f.revoke(&g2.token).await;
    assert!(!f.active(&g2.token).await);
    assert!(f.active(&g2.refresh_token).await, "B10.5 policy");
    // B10.2 a bogus hint is ignored.
    let k = f.s.api_key(&["x"]).await.token;
    f.revoke_as(&k, "refresh_token", &f.s.admin_key)
        .await
        .unwrap();
    assert!(
        !f.active(&k).await,
        "B10.2 API key revoked under a wrong hint"
    );
    let t2 = f.s.access_token("hinted").await.token;
    f.revoke_as(&t2, "bogus", &f.s.admin_key).await.unwrap();
    assert!(
        !f.active(&t2).await,
        "B10.2 access token revoked under a bogus hint"
    );

    // A12.6 log out everywhere.
    let before_bump = f.s.access_token("everywhere").await.token;
    f.client
        .clone()
        .bump_token_version(authed(
            BumpTokenVersionRequest {
                subject: "everywhere".into(),
                reason: String::new(),
            },
            &f.s.admin_key,
        ))
        .await
        .unwrap();
    let after_bump = f.s.access_token("everywhere").await.token;
    assert!(!f.active(&before_bump).await, "A12.6 older token");
    assert!(f.active(&after_bump).await, "A12.6 newer token");

    // A12.7 revocations survive a restart.
    let live = f.s.access_token("alice").await.token;
    let Fixture { s, .. } = f;
    let f = Fixture::on(s.restart().await).await;
    for (name, token) in after.iter().chain([("A12.9 T1", t1.clone())].iter()) {
        assert!(!f.active(token).await, "A12.7 after restart: {name}");
    }
    assert!(!f.active(&g.token).await && !f.active(&before_bump).await);
    assert!(
        f.active(&live).await,
        "A12.7 control: live token survives restart"
    );
    f.assert_healthy().await;
}
