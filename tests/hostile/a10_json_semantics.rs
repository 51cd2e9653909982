//! A10. JSON semantics and Unicode

use serde_json::json;
use tonic::Code;

use crate::common::{access_spec, authed};
use crate::forge::*;
use crate::support::*;

#[tokio::test]
async fn a10_json_semantics() {
    let f = Fixture::start().await;
    let t0 = &f.t0;
    let kid = f.mint.kid.clone();
    let ptext = t0.payload().to_string();
    let htext = t0.header().to_string();
    let without = |name: &str| {
        let mut p = t0.payload();
        set(&mut p, name, None);
        p.to_string()
    };
    let pay = |bytes: &[u8]| f.k1_payload_bytes(bytes);
    let mut rows = vec![
        row("A10 control: T0 re-signed unchanged (K1)", f.k1(|_, _| {})).expect(Active),
        row("A10.1 header {", f.k1_header_bytes(b"{")),
        row("A10.1 payload {", pay(b"{")),
        row(
            "A10.1 payload with trailing garbage",
            pay(format!("{ptext}x").as_bytes()),
        ),
        row(
            "A10.1 payload with a second object",
            pay(format!("{ptext}{{}}").as_bytes()),
        ),
        row(
            "A10.1 payload with a trailing comma",
            pay(format!("{},}}", &ptext[..ptext.len() - 1]).as_bytes()),
        ),
        row(
            "A10.1 payload with a comment",
            pay(splice_front(&ptext, "/*x*/\"a\":1").as_bytes()),
        ),
        row(
            "A10.1 payload single-quoted",
            pay(ptext.replace('"', "'").as_bytes()),
        ),
        row("A10.1 payload empty", pay(b"")),
    ];
    let in_array = format!("[{ptext}]");
    let as_string = format!("{ptext:?}");
    for v in [
        "0",
        "1",
        "-1",
        "true",
        "false",
        "null",
        "[]",
        "\"\"",
        "\"x\"",
        "{}",
        in_array.as_str(),
        as_string.as_str(),
    ] {
        rows.push(row(
            format!("A10.2 payload {}", v.chars().take(12).collect::<String>()),
            pay(v.as_bytes()),
        ));
    }
    for v in ["[]", "\"x\"", "null", "{}", "1"] {
        rows.push(row(
            format!("A10.3 header {v}, T0's signature"),
            t0.with_header(&b64(v)),
        ));
        rows.push(row(
            format!("A10.3 header {v} (K1)"),
            f.k1_header_bytes(v.as_bytes()),
        ));
    }
    // A10.4–A10.6 duplicates.
    rows.push(row(
        "A10.4 duplicate sub, admin first",
        pay(splice_front(&ptext, r#""sub":"admin""#).as_bytes()),
    ));
    rows.push(row(
        "A10.4 duplicate sub, admin last",
        pay(splice(&ptext, r#""sub":"admin""#).as_bytes()),
    ));
    rows.push(row(
        "A10.4 duplicate sub, same value",
        pay(splice(&ptext, r#""sub":"alice""#).as_bytes()),
    ));
    rows.push(row(
        "A10.4 duplicate sub via escape \\u0073ub",
        pay(splice(&ptext, r#""\u0073ub":"admin""#).as_bytes()),
    ));
    rows.push(row(
        "A10.4 duplicate inside an extra claim",
        pay(splice(&ptext, r#""role":{"a":1,"a":2}"#).as_bytes()),
    ));
    for (b, text) in [
        (
            "eyJhbGciOiJFZERTQSIsImFsZyI6Im5vbmUifQ",
            r#"{"alg":"EdDSA","alg":"none"}"#,
        ),
        (
            "eyJhbGciOiJub25lIiwiYWxnIjoiRWREU0EifQ",
            r#"{"alg":"none","alg":"EdDSA"}"#,
        ),
    ] {
        check_vector(b, text);
        rows.push(row(
            format!("A10.5 header {text}, T0's signature"),
            t0.with_header(b),
        ));
        rows.push(row(
            format!("A10.5 header {text}, K1"),
            f.k1_header_bytes(text.as_bytes()),
        ));
    }
    for extra in [
        r#""alg":"none""#,
        r#""alg":"EdDSA""#,
        r#""kid":"x""#,
        r#""typ":"JWT""#,
    ] {
        rows.push(row(
            format!("A10.5 T0 header plus duplicate {extra} (K1)"),
            f.k1_header_bytes(splice(&htext, extra).as_bytes()),
        ));
        rows.push(row(
            format!("A10.5 duplicate {extra} first (K1)"),
            f.k1_header_bytes(splice_front(&htext, extra).as_bytes()),
        ));
    }
    let no_exp = without("exp");
    let exp = t0.payload()["exp"].as_i64().unwrap();
    rows.push(row(
        "A10.6 exp 1 then exp 9999999999",
        pay(splice(&splice_front(&no_exp, r#""exp":1"#), r#""exp":9999999999"#).as_bytes()),
    ));
    rows.push(row(
        "A10.6 exp 9999999999 then exp 1",
        pay(splice(&splice_front(&no_exp, r#""exp":9999999999"#), r#""exp":1"#).as_bytes()),
    ));
    rows.push(row(
        "A10.6 exp twice, same value",
        pay(splice(&ptext, &format!(r#""exp":{exp}"#)).as_bytes()),
    ));
    // A10.7 invalid UTF-8, A10.8 BOM and UTF-16.
    let no_sub = without("sub");
    let with_sub_bytes = |bytes: &[u8]| {
        let head = &no_sub[..no_sub.len() - 1];
        [head.as_bytes(), b",\"sub\":\"", bytes, b"\"}"].concat()
    };
    for (what, bad) in [
        ("overlong C0 AF", &[0xc0u8, 0xaf][..]),
        ("lone FF", &[0xff][..]),
        ("truncated multibyte E2 82", &[0xe2, 0x82][..]),
        ("lone continuation 80", &[0x80][..]),
        ("CESU-8 surrogate ED A0 80", &[0xed, 0xa0, 0x80][..]),
        ("admin then FE", &[b'a', b'd', b'm', b'i', b'n', 0xfe][..]),
    ] {
        rows.push(row(
            format!("A10.7 sub with {what}"),
            pay(&with_sub_bytes(bad)),
        ));
    }
    let bad_kid = [
        &br#"{"alg":"EdDSA","typ":"at+jwt","kid":""#[..],
        kid.as_bytes(),
        &[0xffu8][..],
        &b"\"}"[..],
    ]
    .concat();
    rows.push(row(
        "A10.7 kid with a trailing FF (K1)",
        f.k1_header_bytes(&bad_kid),
    ));
    rows.push(row(
        "A10.8 UTF-8 BOM before the payload",
        pay(&[&b"\xef\xbb\xbf"[..], ptext.as_bytes()].concat()),
    ));
    rows.push(row(
        "A10.8 UTF-8 BOM before the header",
        f.k1_header_bytes(&[&b"\xef\xbb\xbf"[..], htext.as_bytes()].concat()),
    ));
    let utf16: Vec<u8> = ptext.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    rows.push(row("A10.8 payload in UTF-16LE", pay(&utf16)));
    rows.push(row(
        "A10.8 payload in UTF-16LE with BOM",
        pay(&[&[0xffu8, 0xfe][..], utf16.as_slice()].concat()),
    ));
    let utf16be: Vec<u8> = ptext.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
    rows.push(row("A10.8 payload in UTF-16BE", pay(&utf16be)));
    // A10.9 lone surrogates.
    for esc in [r"\ud800", r"\udc00", r"admin\ud800", r"\ud800\u0041"] {
        rows.push(row(
            format!("A10.9 sub \"{esc}\""),
            pay(splice(&no_sub, &format!(r#""sub":"{esc}""#)).as_bytes()),
        ));
    }
    rows.push(row(
        "A10.9 lone surrogate in an extra claim",
        pay(splice(&ptext, r#""role":"\udfff""#).as_bytes()),
    ));
    // A10.10 depth: the deepest nesting that fits under the 8 KiB cap reaches the
    // parser; 10,000 levels are refused by the size cap first.
    let deep = |n: usize| {
        splice(
            &ptext,
            &format!(r#""x":{}{}"#, "[".repeat(n), "]".repeat(n)),
        )
    };
    rows.push(row(
        "A10.10 2,800-deep array in an extra claim",
        pay(deep(2800).as_bytes()),
    ));
    rows.push(row(
        "A10.10 129-deep array (serde_json's limit is 128)",
        pay(deep(129).as_bytes()),
    ));
    let deep_obj = format!(r#""x":{}1{}"#, r#"{"a":"#.repeat(900), "}".repeat(900));
    rows.push(row(
        "A10.10 900-deep object in an extra claim",
        pay(splice(&ptext, &deep_obj).as_bytes()),
    ));
    rows.push(row("A10.10 10,000-deep array", pay(deep(10_000).as_bytes())).expect(Refused));
    let deep_h = splice(
        &htext,
        &format!(r#""x":{}{}"#, "[".repeat(2000), "]".repeat(2000)),
    );
    rows.push(row(
        "A10.10 2,000-deep array in the header (K1)",
        f.k1_header_bytes(deep_h.as_bytes()),
    ));
    // A10.11 numbers.
    rows.push(row(
        "A10.11 1e400 in an extra claim",
        pay(splice(&ptext, r#""n":1e400"#).as_bytes()),
    ));
    rows.push(row(
        "A10.11 -1e400 in an extra claim",
        pay(splice(&ptext, r#""n":-1e400"#).as_bytes()),
    ));
    rows.push(row(
        "A10.11 1,000-digit integer in an extra claim",
        pay(splice(&ptext, &format!(r#""n":{}"#, "9".repeat(1000))).as_bytes()),
    ));
    rows.push(row(
        "A10.11 1,000-digit integer as exp",
        f.k1_raw_claim("exp", &"9".repeat(1000)),
    ));
    rows.push(row("A10.11 -0 as exp", f.k1_raw_claim("exp", "-0")));
    rows.push(row("A10.11 -0 as ver", f.k1_raw_claim("ver", "-0")));
    rows.push(row(
        "A10.11 leading zero 0123 in an extra claim",
        pay(splice(&ptext, r#""n":0123"#).as_bytes()),
    ));
    rows.push(row(
        "A10.11 hex 0x10 in an extra claim",
        pay(splice(&ptext, r#""n":0x10"#).as_bytes()),
    ));
    // Policy: an extra claim holding an ordinary finite number is just a claim.
    rows.push(
        row(
            "A10.11 policy: -0 in an extra claim is kept (K1)",
            pay(splice(&ptext, r#""n":-0"#).as_bytes()),
        )
        .expect(Active),
    );
    rows.push(
        row(
            "A10.11 policy: 1e300 in an extra claim is kept (K1)",
            pay(splice(&ptext, r#""n":1e300"#).as_bytes()),
        )
        .expect(Active),
    );
    // A10.12 confusables.
    let cyrillic_exp = splice(&no_exp, &format!(r#""ехр":{exp}"#));
    rows.push(row(
        "A10.12 exp spelled in Cyrillic (ехр)",
        pay(cyrillic_exp.as_bytes()),
    ));
    rows.push(row(
        "A10.12 exp with a zero-width space in its name",
        pay(splice(&no_exp, &format!("\"exp\u{200b}\":{exp}")).as_bytes()),
    ));
    for (what, sub) in [
        ("admin + zero-width space", "admin\u{200b}"),
        ("admin + NUL", "admin\u{0}"),
        ("RTL override", "\u{202e}nimda"),
        ("admin + BOM", "admin\u{feff}"),
        ("admin + LRI", "\u{2066}admin"),
        ("admin + soft hyphen", "ad\u{ad}min"),
        ("control character", "admin\u{7}"),
        ("admin + newline", "admin\n"),
    ] {
        rows.push(row(
            format!("A10.12 sub {what}"),
            f.k1_claim("sub", Some(json!(sub))),
        ));
    }
    for alg in [
        "EdDSA\u{0}",
        " EdDSA",
        "EdDSA ",
        "EDDSA",
        "eddsa",
        "ＥｄＤＳＡ",
        "EdDSA\u{200b}",
        "ЕdDSA",
    ] {
        rows.push(row(
            format!("A10.12 alg {alg:?} (K1)"),
            f.k1_header("alg", Some(json!(alg))),
        ));
    }
    // Positive controls: a JSON escape is the character it names.
    rows.push(
        row(
            r#"A10.12 control: alg "\u0045dDSA" is EdDSA (K1)"#,
            f.k1_header_bytes(f.header_text_with("alg", r#""\u0045dDSA""#).as_bytes()),
        )
        .expect(Active),
    );
    rows.push(
        row(
            r#"A10.12 control: typ "at\u002bjwt" is at+jwt (K1)"#,
            f.k1_header_bytes(f.header_text_with("typ", r#""at\u002bjwt""#).as_bytes()),
        )
        .expect(Active),
    );
    rows.push(
        row(
            r#"A10.12 control: sub "\u0061lice" is alice (K1)"#,
            pay(splice(&no_sub, r#""sub":"\u0061lice""#).as_bytes()),
        )
        .expect(Active),
    );
    rows.push(
        row(
            "A10 control: header with whitespace between tokens (K1)",
            f.k1_header_bytes(
                serde_json::to_string_pretty(&t0.header())
                    .unwrap()
                    .as_bytes(),
            ),
        )
        .expect(Active),
    );
    f.run("A10", rows).await;

    // The verifier refuses such subjects because issuance never mints them.
    for sub in [
        "admin\u{200b}",
        "\u{202e}nimda",
        "admin\u{feff}",
        "admin\u{0}",
    ] {
        let e = f
            .client
            .clone()
            .issue(authed(access_spec(sub), &f.s.admin_key))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::InvalidArgument,
            "A10.12 Issue with subject {sub:?}"
        );
    }
}
