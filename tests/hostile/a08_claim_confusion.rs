//! A8. Issuer, audience, subject, kind and version confusion

use serde_json::{Value, json};
use tessera::proto::BumpTokenVersionRequest;

use crate::common::authed;
use crate::forge::*;
use crate::support::*;

#[tokio::test]
async fn a8_claim_confusion() {
    let f = Fixture::start().await;
    let now = f.now();
    let t0p = f.t0.payload();
    // A8.9 needs a subject whose version moved on.
    let victim = f.s.access_token("victim").await.token;
    f.client
        .clone()
        .bump_token_version(authed(
            BumpTokenVersionRequest {
                subject: "victim".into(),
                reason: "test".into(),
            },
            &f.s.admin_key,
        ))
        .await
        .unwrap();
    let iss = |v: Value| f.k1_claim("iss", Some(v));
    let mut rows =
        vec![row("A8 control: T0 re-signed unchanged (K1)", f.k1(|_, _| {})).expect(Active)];
    for v in [
        "https://evil.test",
        "https://accounts.google.com",
        "https://tessera",
        "tessera.test",
        "https://tessera.tes",
        "https://tessera.test.evil",
        "https://tessera.testx",
        "https://tessera.test/x",
        "https://Tessera.test",
        "HTTPS://tessera.test",
        "https://tessera.test/",
        "https://tessera.test:443",
        "https://tessera%2Etest",
        "https://%74essera.test",
        "https://ｔessera.test",
        "https://tessera.test\u{0}",
        " https://tessera.test",
        "",
    ] {
        let id = if v.starts_with("https://tessera.test") && v.len() > ISSUER.len() {
            "A8.2/A8.3"
        } else if ISSUER.contains(v) {
            "A8.2"
        } else {
            "A8.1/A8.3"
        };
        rows.push(row(format!("{id} iss {v:?}"), iss(json!(v))));
    }
    rows.push(row("A8.4 iss absent", f.k1_claim("iss", None)));
    rows.push(row("A8.4 iss null", iss(json!(null))));
    rows.push(row("A8.4 iss [issuer]", iss(json!([ISSUER]))));
    rows.push(row("A8.4 iss 1", iss(json!(1))));
    for (what, v) in [
        ("absent", None),
        ("[]", Some(json!([]))),
        ("{}", Some(json!({}))),
        ("123", Some(json!(123))),
        ("a string, not an array", Some(json!("payments-api"))),
        ("[\"\"]", Some(json!([""]))),
        ("[1]", Some(json!([1]))),
        ("[null]", Some(json!([null]))),
        ("[[\"payments-api\"]]", Some(json!([["payments-api"]]))),
        ("null", Some(json!(null))),
    ] {
        rows.push(row(format!("A8.5 aud {what}"), f.k1_claim("aud", v)));
    }
    // Policy: Tessera does not know which audience is "ours" — any non-empty list of
    // non-empty strings is accepted and reported; the resource server checks itself.
    rows.push(
        row(
            "A8.5 policy: aud [\"other\", \"payments-api\"] is active (K1)",
            f.k1_claim("aud", Some(json!(["other", "payments-api"]))),
        )
        .expect(Active),
    );
    for (what, v) in [
        ("absent", None),
        ("\"\"", Some(json!(""))),
        ("1", Some(json!(1))),
        ("null", Some(json!(null))),
        ("[\"alice\"]", Some(json!(["alice"]))),
        ("{}", Some(json!({}))),
        ("true", Some(json!(true))),
    ] {
        rows.push(row(format!("A8.6 sub {what}"), f.k1_claim("sub", v)));
    }
    let jti = t0p["jti"].as_str().unwrap().to_string();
    for (what, v) in [
        ("absent", None),
        ("1", Some(json!(1))),
        ("null", Some(json!(null))),
        ("\"\"", Some(json!(""))),
        ("short", Some(json!("short"))),
        ("23 characters", Some(json!(format!("{jti}A")))),
        ("21 characters", Some(json!(jti[..21].to_string()))),
        ("padded", Some(json!(format!("{jti}==")))),
        ("with +/", Some(json!("+/+/+/+/+/+/+/+/+/+/+A"))),
        ("as a number", Some(json!(u64::MAX))),
    ] {
        rows.push(row(format!("A8.7 jti {what}"), f.k1_claim("jti", v)));
    }
    for v in trailing_bit_variants(&jti, 2) {
        rows.push(row(
            format!("A8.7 jti trailing-bit variant {v}"),
            f.k1_claim("jti", Some(json!(v))),
        ));
    }
    // A8.8 token-kind confusion: shapes of other kinds of JWT, signed by our key.
    let kinds: Vec<(&str, Value, Value)> = vec![
        (
            "ID token",
            json!({"alg": f.mint.alg, "kid": f.mint.kid, "typ": "JWT"}),
            json!({"iss": ISSUER, "sub": "alice", "aud": "payments-api", "exp": now + 600, "iat": now, "nonce": "n-0S6_WzA2Mj", "auth_time": now}),
        ),
        (
            "ID token with at+jwt typ",
            f.t0.header(),
            json!({"iss": ISSUER, "sub": "alice", "aud": ["payments-api"], "exp": now + 600, "iat": now, "nbf": now, "nonce": "n", "auth_time": now, "jti": b64(random_bytes(16)), "client_id": "c", "ver": 0}),
        ),
        (
            "client assertion",
            json!({"alg": f.mint.alg, "kid": f.mint.kid, "typ": "JWT"}),
            json!({"iss": "client-1", "sub": "client-1", "aud": format!("{ISSUER}/token"), "jti": b64(random_bytes(16)), "exp": now + 60, "iat": now}),
        ),
        (
            "refresh JWT (typ rt+jwt)",
            json!({"alg": f.mint.alg, "kid": f.mint.kid, "typ": "rt+jwt"}),
            t0p.clone(),
        ),
        (
            "security event token",
            json!({"alg": f.mint.alg, "kid": f.mint.kid, "typ": "secevent+jwt"}),
            json!({"iss": ISSUER, "jti": b64(random_bytes(16)), "iat": now, "aud": ["payments-api"], "events": {"urn:x": {}}}),
        ),
    ];
    for (what, h, p) in kinds {
        rows.push(row(format!("A8.8 {what} (K1)"), f.mint.sign_json(&h, &p)));
    }
    for (claim, v) in [
        ("typ", json!("refresh")),
        ("azp", json!("client-1")),
        ("nonce", json!("n")),
        ("auth_time", json!(now)),
        ("may_act", json!({"sub": "svc"})),
        ("cnf", json!({"jkt": "x"})),
    ] {
        let mut p = t0p.clone();
        p[claim] = v;
        if claim == "nonce" {
            // Not registered with Tessera: an ordinary extra claim, kept as such.
            rows.push(
                row(
                    format!("A8.8 extra claim {claim} is only a claim (K1)"),
                    f.mint.sign_json(&f.t0.header(), &p),
                )
                .expect(Active),
            );
        } else {
            rows.push(row(
                format!("A8.8 registered claim {claim} smuggled in (K1)"),
                f.mint.sign_json(&f.t0.header(), &p),
            ));
        }
    }
    rows.push(row(
        "A8.8 act that is not an object",
        f.k1_claim("act", Some(json!("svc"))),
    ));
    // A8.9 versions.
    rows.push(row(
        "A8.9 ver below the subject's version (K0: issued, then bumped)",
        victim.clone(),
    ));
    rows.push(row(
        "A8.9 ver below the subject's version (K1 re-sign)",
        f.mint.tweak(&victim, |_, _| {}),
    ));
    rows.push(
        row(
            "A8.9 control: ver = the subject's current version (K1)",
            f.mint.tweak(&victim, |_, p| p["ver"] = json!(1)),
        )
        .expect(Active),
    );
    for (what, v) in [
        ("absent", None),
        ("\"0\"", Some(json!("0"))),
        ("-1", Some(json!(-1))),
        ("null", Some(json!(null))),
        ("[]", Some(json!([]))),
    ] {
        rows.push(row(format!("A8.9 ver {what}"), f.k1_claim("ver", v)));
    }
    rows.push(row("A8.9 ver 0.0", f.k1_raw_claim("ver", "0.0")));
    rows.push(row("A8.9 client_id absent", f.k1_claim("client_id", None)));
    rows.push(row(
        "A8.9 client_id 1",
        f.k1_claim("client_id", Some(json!(1))),
    ));
    rows.push(row(
        "A8 scope not a string",
        f.k1_claim("scope", Some(json!(["read:payments"]))),
    ));
    f.run("A8", rows).await;

    // A8.10 policy: the caller's own audience is not consulted. An introspector whose
    // key is not in the token's `aud` sees it active, with its audience to check.
    let rs = f.s.api_key(&["tessera:introspect"]).await.token;
    let r = f.introspect(&f.t0.token, "", &rs).await.unwrap();
    assert!(r.active, "A8.10 policy: any introspector sees a live token");
    assert_eq!(r.audience, vec!["payments-api"]);
}
