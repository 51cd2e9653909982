//! A7. Time claims (system clock; the exact boundaries are in `a7_boundaries_...`)

use serde_json::json;
use tessera::proto::issue_request::Credential;
use tessera::proto::{IssueRequest, RotateSigningKeyRequest};

use crate::common::mint::Minter;
use crate::common::{access_spec, authed};
use crate::forge::*;
use crate::support::*;

#[tokio::test]
async fn a7_time_claims() {
    let f = Fixture::start().await;
    let now = f.now();
    let iat = f.t0.payload()["iat"].as_i64().unwrap();
    let times = |i: i64, n: i64, e: i64| {
        f.k1(|_, p| {
            p["iat"] = json!(i);
            p["nbf"] = json!(n);
            p["exp"] = json!(e);
        })
    };
    let mut rows = vec![
        row("A7 control: T0 re-signed unchanged (K1)", f.k1(|_, _| {})).expect(Active),
        row(
            "A7.1 exp = now - 1",
            f.k1_claim("exp", Some(json!(now - 1))),
        ),
        row(
            "A7.1 exp = now - 1, iat/nbf an hour before",
            times(now - 3599, now - 3599, now - 1),
        ),
        row("A7.2 exp absent", f.k1_claim("exp", None)),
        row(
            "A7.3 nbf = now + 60",
            f.k1_claim("nbf", Some(json!(now + 60))),
        ),
        row("A7.3 nbf absent", f.k1_claim("nbf", None)),
        row(
            "A7.4 iat = now + 1 day",
            f.k1_claim("iat", Some(json!(now + 86_400))),
        ),
        row("A7.4 iat absent", f.k1_claim("iat", None)),
        row(
            "A7.5 exp - iat = 3601 s (max lifetime 1 h)",
            times(iat, iat, iat + 3601),
        ),
        row(
            "A7.5 iat 2 h ago, exp in 1 min",
            times(now - 7200, now - 7200, now + 60),
        ),
        row(
            "A7.5 iat 1 h ago, exp in 1 min",
            times(now - 3600, now - 3600, now + 60),
        ),
        row(
            "A7.6 exp \"9999999999\" (string)",
            f.k1_claim("exp", Some(json!("9999999999"))),
        ),
        row(
            "A7.6 exp as string of a valid time",
            f.k1_claim("exp", Some(json!((now + 600).to_string()))),
        ),
        row(
            "A7.7 nbf \"99999999999\" (string)",
            f.k1_claim("nbf", Some(json!("99999999999"))),
        ),
        row(
            "A7.7 nbf as string of a valid time",
            f.k1_claim("nbf", Some(json!(iat.to_string()))),
        ),
        row(
            "A7.7 iat as string",
            f.k1_claim("iat", Some(json!(iat.to_string()))),
        ),
        row("A7.8 exp 1e400", f.k1_raw_claim("exp", "1e400")),
        row("A7.8 exp NaN (bare)", f.k1_raw_claim("exp", "NaN")),
        row(
            "A7.8 exp Infinity (bare)",
            f.k1_raw_claim("exp", "Infinity"),
        ),
        row("A7.8 exp \"NaN\"", f.k1_claim("exp", Some(json!("NaN")))),
        row(
            "A7.8 exp 100-digit integer",
            f.k1_raw_claim("exp", &"9".repeat(100)),
        ),
        row(
            "A7.8 exp finite float 1893456000.5",
            f.k1_raw_claim("exp", "1893456000.5"),
        ),
        row(
            "A7.8 exp valid time + .5",
            f.k1_raw_claim("exp", &format!("{}.5", now + 600)),
        ),
        row(
            "A7.8 exp valid time written as .0",
            f.k1_raw_claim("exp", &format!("{}.0", now + 600)),
        ),
        row(
            "A7.8 exp valid time in exponent form",
            f.k1_raw_claim("exp", &format!("{}e0", now + 600)),
        ),
        row(
            "A7.8 iat as float",
            f.k1_raw_claim("iat", &format!("{iat}.0")),
        ),
        row(
            "A7.8 nbf as float",
            f.k1_raw_claim("nbf", &format!("{iat}.0")),
        ),
        row("A7.9 exp -1", f.k1_claim("exp", Some(json!(-1)))),
        row("A7.9 exp 0", f.k1_claim("exp", Some(json!(0)))),
        row("A7.9 exp null", f.k1_claim("exp", Some(json!(null)))),
        row("A7.9 exp true", f.k1_claim("exp", Some(json!(true)))),
        row("A7.9 exp []", f.k1_claim("exp", Some(json!([])))),
        row("A7.9 exp {}", f.k1_claim("exp", Some(json!({})))),
        row(
            "A7.9 exp [valid time]",
            f.k1_claim("exp", Some(json!([now + 600]))),
        ),
        row(
            "A7.10 exp 18446744073709551615",
            f.k1_claim("exp", Some(json!(u64::MAX))),
        ),
        row(
            "A7.10 exp 9223372036854775808",
            f.k1_claim("exp", Some(json!(1u64 << 63))),
        ),
        row(
            "A7.10 exp i64::MAX",
            f.k1_claim("exp", Some(json!(i64::MAX))),
        ),
        row(
            "A7.10 exp 253402300800 (year 10000)",
            f.k1_claim("exp", Some(json!(253_402_300_800i64))),
        ),
        row(
            "A7.10 iat = nbf = i64::MIN",
            times(i64::MIN, i64::MIN, now + 60),
        ),
        row(
            "A7.10 iat i64::MIN, nbf now",
            times(i64::MIN, now, now + 60),
        ),
        row(
            "A7.10 exp i64::MIN",
            f.k1_claim("exp", Some(json!(i64::MIN))),
        ),
        row("A7.10 iat -1", times(-1, -1, now + 60)),
        row(
            "A7 nbf before iat (never minted)",
            times(iat, iat - 1, iat + 600),
        ),
        row("A7 exp before iat", times(iat, iat, iat - 1)),
        row("A7 exp == iat", times(iat, iat, iat)),
        row(
            "A7.12 control: exp = now + 30 (K1)",
            f.k1_claim("exp", Some(json!(now + 30))),
        )
        .expect(Active),
        row(
            "A7.12 control: iat = nbf = now - 5 (K1)",
            times(now - 5, now - 5, now + 600),
        )
        .expect(Active),
        row(
            "A7.5 control: exp - iat = exactly 1 h (K1)",
            times(iat, iat, iat + 3600),
        )
        .expect(Active),
    ];
    rows.push(row("A7 control: T0 itself", f.t0.token.clone()).expect(Active));
    f.run("A7", rows).await;
}

/// Runs `check` with the test clock at exactly `t` (Unix seconds), moving it there
/// (backwards too) and retrying if the wall clock ticks during the call, so boundary
/// assertions never race it.
async fn at_instant<F, Fut>(clock: &tessera::clock::Clock, t: i64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..10 {
        clock.advance(t - clock.now());
        let got = check().await;
        if clock.now() == t {
            return got;
        }
    }
    panic!("the clock would not hold still at {t}");
}

/// A7.11, A3.5/A4.9, A12.8 and B9.5: everything that moves the clock.
#[tokio::test]
async fn a7_boundaries_retired_keys_and_blocklist_expiry() {
    let f = Fixture::start().await;
    let clock = f.s.clock.clone();

    // A7.11: no leeway. exp == now is expired; exp == now + 1 is live; nbf == now and
    // iat == now are live; nbf == now + 1 and iat == now + 1 are not yet valid.
    let at = f.now() + 100;
    let mk = |i: i64, n: i64, e: i64| {
        f.k1(|_, p| {
            p["iat"] = json!(i);
            p["nbf"] = json!(n);
            p["exp"] = json!(e);
        })
    };
    let cases = [
        ("A7.11 exp == now", mk(at - 60, at - 60, at), false),
        ("A7.11 exp == now + 1", mk(at - 60, at - 60, at + 1), true),
        ("A7.11 exp == now - 1", mk(at - 60, at - 60, at - 1), false),
        ("A7.11 nbf == now", mk(at - 60, at, at + 60), true),
        ("A7.11 iat == nbf == now", mk(at, at, at + 60), true),
        ("A7.11 nbf == now + 1", mk(at - 60, at + 1, at + 60), false),
        (
            "A7.11 iat == nbf == now + 1",
            mk(at + 1, at + 1, at + 60),
            false,
        ),
    ];
    for (name, token, want) in &cases {
        assert_eq!(
            at_instant(&clock, at, || f.active(token)).await,
            *want,
            "{name}"
        );
    }

    // A12.8: a revoked token stays inactive up to its exp (no leeway: exp − 1), also
    // across a restart, whose final housekeeping purges the blocklist; an unrevoked
    // token of the same age is live at that instant, so the blocklist is what counts.
    let short = |subject: &str| {
        let mut req = access_spec(subject);
        if let Some(Credential::AccessToken(spec)) = &mut req.credential {
            spec.ttl = Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            });
        }
        req
    };
    let revoked = f.issue(short("gc-revoked")).await;
    let exp = revoked.expires_at.unwrap().seconds;
    let live = f.issue(short("gc-live")).await;
    let live_exp = live.expires_at.unwrap().seconds;
    f.revoke(&revoked.token).await;
    clock.advance(exp - 5 - clock.now());
    // Rotate the signing key so that A3.5/A4.9 below has a retired key to use.
    let old = Minter::active(&f.s);
    let new_kid =
        f.s.keys()
            .await
            .rotate_signing_key(authed(
                RotateSigningKeyRequest { rotate_now: true },
                &f.s.admin_key,
            ))
            .await
            .unwrap()
            .into_inner()
            .kid;
    let t0 = f.t0.clone();
    let s = f.s.restart().await;
    let f = Fixture {
        client: s.tokens().await,
        mint: Minter::for_kid(&s, &new_kid),
        t0,
        s,
    };
    assert!(
        !at_instant(&clock, exp - 1, || f.active(&revoked.token)).await,
        "A12.8 revoked token active after restart, one second before its exp"
    );
    assert!(
        at_instant(&clock, live_exp - 1, || f.active(&live.token)).await,
        "A12.8 control: the unrevoked token is live one second before its exp"
    );

    // A3.5/A4.9: once the retired key is past its window (max lifetime + 60 s), a
    // token it signs is inactive even with claims valid right now; the same claims
    // signed by the active key are active.
    clock.advance(3600 + 61);
    let fresh = |m: &Minter| {
        let n = clock.now();
        m.tweak(&f.t0.token, |h, p| {
            h["kid"] = json!(m.kid);
            p["iat"] = json!(n);
            p["nbf"] = json!(n);
            p["exp"] = json!(n + 600);
            p["jti"] = json!(b64(random_bytes(16)));
        })
    };
    assert!(
        !f.active(&fresh(&old)).await,
        "A3.5/A4.9 token signed by a key past its verification window"
    );
    assert!(f.active(&fresh(&f.mint)).await, "A3.5 control: active key");

    // B9.5: expiry applies to opaque tokens too.
    let key = f
        .issue(IssueRequest {
            credential: Some(Credential::ApiKey(tessera::proto::ApiKeySpec {
                owner: "o".into(),
                environment: "test".into(),
                ttl: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..Default::default()
            })),
        })
        .await;
    let rt = f.issue_with_refresh("rt-expiry").await.refresh_token;
    assert!(f.active(&key.token).await && f.active(&rt).await);
    clock.advance(60);
    assert!(!f.active(&key.token).await, "B9.5 expired API key");
    assert!(f.active(&rt).await);
    clock.advance(14 * 86_400);
    assert!(!f.active(&rt).await, "B9.5 expired refresh token");
    f.assert_healthy().await;
}
