//! A4. kid attacks

use ring::signature::KeyPair as _;
use serde_json::json;
use tessera::test_support::params;

use crate::common::{self, TestServer};
use crate::forge::*;
use crate::support::*;

/// The database's schema (its tables, indexes and triggers) and how many signing keys
/// it holds.
fn schema_and_keys(s: &TestServer) -> (String, i64) {
    common::with_database(&s.data_dir, |db| {
        let schema_sql = if db.is_postgres() {
            "SELECT string_agg(kind || ':' || name, ',' ORDER BY name, kind) FROM (
                 SELECT 'table' AS kind, table_name::text AS name FROM information_schema.tables
                 WHERE table_schema = current_schema()
                 UNION ALL SELECT 'index', indexname::text FROM pg_indexes
                 WHERE schemaname = current_schema()
                 UNION ALL SELECT 'trigger', trigger_name::text FROM information_schema.triggers
                 WHERE trigger_schema = current_schema()
             ) AS objects"
        } else {
            "SELECT group_concat(type || ':' || name, ',') FROM (SELECT type, name FROM sqlite_master ORDER BY name)"
        };
        let schema = db.query_row(schema_sql, params![], |r| r.get::<String>(0))?;
        let keys = db.query_row("SELECT count(*) FROM signing_keys", params![], |r| {
            r.get::<i64>(0)
        })?;
        Ok((schema, keys))
    })
}

/// Replaces the first Latin letter that has a Cyrillic twin.
fn homoglyph(s: &str) -> String {
    let twins = [
        ('a', 'а'),
        ('c', 'с'),
        ('e', 'е'),
        ('o', 'о'),
        ('p', 'р'),
        ('x', 'х'),
        ('y', 'у'),
        ('A', 'А'),
        ('B', 'В'),
        ('C', 'С'),
        ('E', 'Е'),
        ('H', 'Н'),
        ('K', 'К'),
        ('M', 'М'),
        ('O', 'О'),
        ('P', 'Р'),
        ('T', 'Т'),
        ('X', 'Х'),
    ];
    let i = s
        .char_indices()
        .find(|(_, c)| twins.iter().any(|(l, _)| l == c))
        .map(|(i, _)| i)
        .expect("a letter with a Cyrillic twin");
    let c = s[i..].chars().next().unwrap();
    let twin = twins.iter().find(|(l, _)| *l == c).unwrap().1;
    format!("{}{twin}{}", &s[..i], &s[i + c.len_utf8()..])
}

#[tokio::test]
async fn a4_kid_attacks() {
    let f = Fixture::start().await;
    let t0 = &f.t0;
    let kid = f.mint.kid.clone();
    let before = schema_and_keys(&f.s);
    let mut rows = Vec::new();

    // A4.1 an unknown kid with a correct signature by the unknown key.
    let other = attacker_ed25519();
    let other_kid = tessera::keys::jwk::thumbprint_ed25519(other.public_key().as_ref());
    rows.push(row(
        "A4.1 unknown kid (another key's thumbprint), signed by that key",
        attacker_sign(
            &other,
            &json!({"alg": "EdDSA", "kid": other_kid, "typ": "at+jwt"}),
            &t0.p,
        ),
    ));
    rows.push(row(
        "A4.1 random kid, signed by the real key (K1)",
        f.k1_header("kid", Some(json!(b64(random_bytes(32))))),
    ));
    // A4.2 no kid: no falling back to trying every key.
    let mut h = t0.header();
    set(&mut h, "kid", None);
    rows.push(row(
        "A4.2 kid removed, T0's signature",
        t0.with_header(&b64_json(&h)),
    ));
    rows.push(row(
        "A4.2 kid removed, signed by the real key (K1)",
        f.k1_header("kid", None),
    ));
    // A4.3–A4.7 injected kids: HS256 with jwt_tool's keys, and the real key's signature.
    let injected = [
        ("A4.3", "", ""),
        ("A4.4", "../../../../../../dev/null", ""),
        ("A4.5", "/dev/null", ""),
        ("A4.5", "/invalid_path", ""),
        ("A4.6", "x' UNION SELECT '1';--", "1"),
        ("A4.6", "' OR '1'='1", ""),
        ("A4.6", "1; DROP TABLE keys;--", ""),
        ("A4.6", "1'; DROP TABLE signing_keys;--", ""),
        ("A4.6", "%", ""),
        ("A4.6", "_", ""),
        ("A4.6", "*", ""),
        ("A4.7", "|sleep 10", ""),
        ("A4.7", "$(sleep 10)", ""),
        ("A4.7", "`sleep 10`", ""),
        ("A4.7", "; sleep 10 #", ""),
        ("A4.7", "| curl http://127.0.0.1:9/", ""),
    ];
    for (id, k, key) in injected {
        let h = b64_json(&json!({"alg": "HS256", "kid": k, "typ": "at+jwt"}));
        rows.push(row(
            format!("{id} kid {k:?}, HS256 keyed with {key:?}"),
            hmac_token("HS256", key.as_bytes(), &h, &t0.p),
        ));
        rows.push(row(
            format!("{id} kid {k:?}, signed by the real key (K1)"),
            f.k1_header("kid", Some(json!(k))),
        ));
    }
    // A4.10 kid of the wrong type, oversized, NUL, homoglyph, near-misses.
    for v in [
        json!(1),
        json!([]),
        json!({}),
        json!(null),
        json!(true),
        json!([kid]),
        json!({"kid": kid}),
    ] {
        rows.push(row(
            format!("A4.10 kid {v}, K1"),
            f.k1_header("kid", Some(v.clone())),
        ));
    }
    let near: Vec<(&str, String)> = vec![
        ("NUL appended", format!("{kid}\u{0}")),
        ("a lone NUL", "\u{0}".into()),
        ("Cyrillic homoglyph", homoglyph(&kid)),
        ("upper-cased", kid.to_uppercase()),
        ("trailing space", format!("{kid} ")),
        ("leading space", format!(" {kid}")),
        ("= padded", format!("{kid}=")),
        (
            "standard alphabet",
            kid.replace('-', "+").replace('_', "/") + "x",
        ),
        ("truncated", kid[..kid.len() - 1].to_string()),
        ("5000 characters", "k".repeat(5000)),
    ];
    for (what, v) in near {
        rows.push(row(
            format!("A4.10 kid {what}, K1"),
            f.k1_header("kid", Some(json!(v))),
        ));
    }
    rows.push(
        row(
            "A4.10 kid of 64 KiB, K1",
            f.k1_header("kid", Some(json!("k".repeat(64 * 1024)))),
        )
        .expect(Refused),
    );
    rows.push(row("A4 control: T0 re-signed unchanged (K1)", f.k1(|_, _| {})).expect(Active));
    f.run("A4", rows).await;
    assert_eq!(
        schema_and_keys(&f.s),
        before,
        "A4.6: schema or key table changed"
    );
}
