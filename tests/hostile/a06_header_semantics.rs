//! A6. Header semantics

use serde_json::{Value, json};

use crate::forge::*;
use crate::support::*;

#[tokio::test]
async fn a6_header_semantics() {
    let f = Fixture::start().await;
    let t0 = &f.t0;
    let mut rows = Vec::new();
    let mut add = |name: &str, change: Vec<(&str, Value)>| {
        let tok = f.k1(|h, _| {
            for (k, v) in change {
                h[k] = v;
            }
        });
        rows.push(row(format!("{name} (K1)"), tok));
    };
    add(
        "A6.1 crit [x-custom-policy] with x-custom-policy: require-mfa",
        vec![
            ("crit", json!(["x-custom-policy"])),
            ("x-custom-policy", json!("require-mfa")),
        ],
    );
    add("A6.2 crit []", vec![("crit", json!([]))]);
    add(
        "A6.3 crit \"b64\" (not a list)",
        vec![("crit", json!("b64"))],
    );
    add("A6.3 crit [null]", vec![("crit", json!([null]))]);
    add("A6.3 crit [1]", vec![("crit", json!([1]))]);
    add(
        "A6.4 crit [foo], foo absent",
        vec![("crit", json!(["foo"]))],
    );
    add(
        "A6.5 b64:false, crit [b64]",
        vec![("b64", json!(false)), ("crit", json!(["b64"]))],
    );
    add("A6.6 b64:false without crit", vec![("b64", json!(false))]);
    add("A6.6 b64:true", vec![("b64", json!(true))]);
    add("A6.8 cty JWT", vec![("cty", json!("JWT"))]);
    add("A6.8 zip DEF", vec![("zip", json!("DEF"))]);
    add(
        "A6.9 enc A256GCM on a signed token",
        vec![("enc", json!("A256GCM"))],
    );
    add("A6 unknown member x:1", vec![("x", json!(1))]);
    for typ in [
        json!("JWT"),
        json!("jwt"),
        json!("rt+jwt"),
        json!("id_token+jwt"),
        json!("secevent+jwt"),
        json!("dpop+jwt"),
        json!("application/jwt"),
        json!("AT+JWT"),
        json!("application/AT+JWT"),
        json!("at+jwt "),
        json!(" at+jwt"),
        json!("at+jwt\u{0}"),
        json!("at jwt"),
        json!("application/at+jwt; charset=utf-8"),
        json!(null),
        json!(1),
        json!(["at+jwt"]),
    ] {
        add(&format!("A6.7 typ {typ}"), vec![("typ", typ)]);
    }
    rows.push(row("A6.7 typ missing (K1)", f.k1_header("typ", None)));
    // A6.5 with an unencoded payload in the signing input (RFC 7797 style).
    let h = b64_json(
        &json!({"alg": f.mint.alg, "kid": f.mint.kid, "typ": "at+jwt", "b64": false, "crit": ["b64"]}),
    );
    let raw_payload = String::from_utf8(unb64(&t0.p)).unwrap();
    let detached = f.mint.signature(format!("{h}.{raw_payload}").as_bytes());
    rows.push(row(
        "A6.5 b64:false with the raw payload signed, detached (K1)",
        format!("{h}..{}", b64(&detached)),
    ));
    rows.push(row(
        "A6.5 b64:false with the raw payload signed, inline (K1)",
        format!("{h}.{raw_payload}.{}", b64(&detached)),
    ));
    // A6.9 JWE-shaped headers on a three-segment token.
    for h in [
        json!({"alg": "dir", "enc": "A256GCM"}),
        json!({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": f.mint.kid}),
        json!({"alg": "ECDH-ES", "enc": "A128CBC-HS256", "kid": f.mint.kid, "typ": "at+jwt"}),
    ] {
        rows.push(row(
            format!("A6.9 JWE header {h}, T0's signature"),
            t0.with_header(&b64_json(&h)),
        ));
        rows.push(row(
            format!("A6.9 JWE header {h}, K1"),
            f.mint.sign_input(&format!("{}.{}", b64_json(&h), t0.p)),
        ));
    }
    // Positive controls: both RFC 9068 spellings, otherwise-valid, are active.
    rows.push(
        row(
            "A6.7 control: typ at+jwt (K1)",
            f.k1_header("typ", Some(json!("at+jwt"))),
        )
        .expect(Active),
    );
    rows.push(
        row(
            "A6.7 control: typ application/at+jwt (K1)",
            f.k1_header("typ", Some(json!("application/at+jwt"))),
        )
        .expect(Active),
    );
    f.run("A6", rows).await;
}
