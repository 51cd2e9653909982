//! A1. alg=none / unsecured JWS

use serde_json::json;

use crate::forge::*;
use crate::support::*;

#[tokio::test]
async fn a1_alg_none() {
    let f = Fixture::start().await;
    let t0 = &f.t0;
    let kid = f.mint.kid.clone();
    let mut rows = Vec::new();

    let vectors = [
        ("A1.1", "eyJhbGciOiJub25lIn0", r#"{"alg":"none"}"#),
        ("A1.2", "eyJhbGciOiJOb25lIn0", r#"{"alg":"None"}"#),
        ("A1.3", "eyJhbGciOiJOT05FIn0", r#"{"alg":"NONE"}"#),
        ("A1.4", "eyJhbGciOiJuT25FIn0", r#"{"alg":"nOnE"}"#),
        (
            "A1.4",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
            r#"{"alg":"none","typ":"JWT"}"#,
        ),
        (
            "A1.4",
            "eyJhbGciOiJOb25lIiwidHlwIjoiSldUIn0",
            r#"{"alg":"None","typ":"JWT"}"#,
        ),
        (
            "A1.4",
            "eyJhbGciOiJOT05FIiwidHlwIjoiSldUIn0",
            r#"{"alg":"NONE","typ":"JWT"}"#,
        ),
        (
            "A1.4",
            "eyJhbGciOiJuT25FIiwidHlwIjoiSldUIn0",
            r#"{"alg":"nOnE","typ":"JWT"}"#,
        ),
    ];
    for (id, h, text) in vectors {
        check_vector(h, text);
        rows.push(row(
            format!("{id} {text}, empty signature"),
            format!("{h}.{}.", t0.p),
        ));
        rows.push(row(
            format!("A1.5 {text}, T0's signature kept"),
            t0.with_header(h),
        ));
        rows.push(
            row(
                format!("A1.6 {text}, no trailing dot"),
                format!("{h}.{}", t0.p),
            )
            .expect(InactiveOrInvalid),
        );
    }
    // Sharper: T0's own header with only `alg` changed.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = b64_json(&json!({"alg": alg, "kid": kid, "typ": "at+jwt"}));
        rows.push(row(
            format!("A1.1 T0 header with alg {alg}, empty signature"),
            format!("{h}.{}.", t0.p),
        ));
        rows.push(row(
            format!("A1.5 T0 header with alg {alg}, T0's signature"),
            t0.with_header(&h),
        ));
        rows.push(row(
            format!("A1.5 T0 header with alg {alg}, signed by the real key (K1)"),
            f.k1_header("alg", Some(json!(alg))),
        ));
    }
    // A1.7 degenerate alg values.
    for (h, text) in [
        ("eyJhbGciOiIifQ", r#"{"alg":""}"#),
        ("eyJhbGciOm51bGx9", r#"{"alg":null}"#),
        ("eyJ0eXAiOiJKV1QifQ", r#"{"typ":"JWT"}"#),
    ] {
        check_vector(h, text);
        rows.push(row(
            format!("A1.7 {text}, empty signature"),
            format!("{h}.{}.", t0.p),
        ));
        rows.push(row(
            format!("A1.7 {text}, T0's signature"),
            t0.with_header(h),
        ));
    }
    for v in [
        json!(""),
        json!(null),
        json!(123),
        json!(["EdDSA"]),
        json!({}),
        json!({"alg": "EdDSA"}),
        json!(true),
    ] {
        rows.push(row(
            format!("A1.7 T0 header with alg {v}, T0's signature"),
            t0.with_header(&b64_json(&json!({"alg": v, "kid": kid, "typ": "at+jwt"}))),
        ));
        rows.push(row(
            format!("A1.7 T0 header with alg {v}, K1"),
            f.k1_header("alg", Some(v.clone())),
        ));
    }
    rows.push(row(
        "A1.7 T0 header without alg, K1",
        f.k1_header("alg", None),
    ));
    // A1.8 escaped member name.
    check_vector("eyJcdTAwNjFsZyI6Im5vbmUifQ", r#"{"\u0061lg":"none"}"#);
    rows.push(row(
        r#"A1.8 {"\u0061lg":"none"}, empty signature"#,
        format!("eyJcdTAwNjFsZyI6Im5vbmUifQ.{}.", t0.p),
    ));
    rows.push(row(
        r#"A1.8 {"\u0061lg":"none"}, T0's signature"#,
        t0.with_header("eyJcdTAwNjFsZyI6Im5vbmUifQ"),
    ));
    let escaped_none = format!(r#"{{"\u0061lg":"none","kid":"{kid}","typ":"at+jwt"}}"#);
    rows.push(row(
        r#"A1.8 T0 header as "\u0061lg":"none", K1"#,
        f.k1_header_bytes(escaped_none.as_bytes()),
    ));
    // The escape really is decoded: the same spelling of EdDSA is the genuine header.
    let escaped_eddsa = format!(r#"{{"\u0061lg":"EdDSA","kid":"{kid}","typ":"at+jwt"}}"#);
    rows.push(
        row(
            r#"A1.8 control: "\u0061lg":"EdDSA" is alg EdDSA, K1"#,
            f.k1_header_bytes(escaped_eddsa.as_bytes()),
        )
        .expect(Active),
    );
    rows.push(row(
        "B5 RFC 7515 A.5 unsecured JWS",
        "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.",
    ));
    f.run("A1", rows).await;
}
