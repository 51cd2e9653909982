//! A11. Opaque tokens

use std::time::{Duration, Instant};

use tessera::proto::IntrospectResponse;

use crate::forge::*;
use crate::support::*;

fn swap_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// The same text with the character at `i` replaced by a different base64url one.
fn change_char(s: &str, i: usize) -> String {
    let c = s.as_bytes()[i];
    let new = if c == b'A' { 'B' } else { 'A' };
    format!("{}{new}{}", &s[..i], &s[i + 1..])
}

#[tokio::test]
async fn a11_opaque_tokens() {
    let f = Fixture::start().await;
    let key = f.s.api_key(&["read:things"]).await.token;
    let with_rt = f.issue_with_refresh("opaque").await;
    let rt = with_rt.refresh_token.clone();
    let revoked_key = f.s.api_key(&["read:things"]).await.token;
    f.revoke(&revoked_key).await;
    let revoked_rt = f.issue_with_refresh("opaque").await.refresh_token;
    f.revoke(&revoked_rt).await;

    // tsk_<env>_<id>_<43-char secret><6-char checksum>
    let parts: Vec<&str> = key.splitn(4, '_').collect();
    let (env, id, tail) = (parts[1], parts[2], parts[3]);
    let (secret, check) = tail.split_at(43);
    let body = |env: &str, id: &str, secret: &str| format!("tsk_{env}_{id}_{secret}");
    let random_id: String = random_bytes(8).iter().map(|b| format!("{b:02x}")).collect();
    let mut rows = vec![
        row("A11 control: the API key", key.clone()).expect(Active),
        row("A11 control: the refresh token", rt.clone()).expect(Active),
        row(
            "A11.1 random API key in the exact format",
            with_checksum(&body("test", &random_id, &b64(random_bytes(32)))),
        ),
        row(
            "A11.1 random refresh token in the exact format",
            format!("tsr_{}", b64(random_bytes(32))),
        ),
        row(
            "A11.1 random code in the exact format",
            format!("tsc_{}", b64(random_bytes(32))),
        ),
        row(
            "A11.2 right id, wrong secret, valid checksum",
            with_checksum(&body(env, id, &b64(random_bytes(32)))),
        ),
        row(
            "A11.2 right id, wrong secret, old checksum",
            format!("{}{check}", body(env, id, &b64(random_bytes(32)))),
        ),
        row(
            "A11.2 right id and secret, other environment",
            with_checksum(&body("prod", id, secret)),
        ),
        row(
            "A11.2 right secret, other id",
            with_checksum(&body(env, &random_id, secret)),
        ),
        row(
            "A11.3 API key, one secret character changed (checksum fixed)",
            with_checksum(&body(env, id, &change_char(secret, 20))),
        ),
        row(
            "A11.3 API key, one secret character changed",
            format!("{}{check}", body(env, id, &change_char(secret, 20))),
        ),
        row(
            "A11.3 API key, checksum character changed",
            change_char(&key, key.len() - 1),
        ),
        row("A11.3 API key truncated by one", &key[..key.len() - 1]),
        row("A11.3 API key extended by one", format!("{key}A")),
        row(
            "A11.3 API key with secret extended (checksum fixed)",
            with_checksum(&body(env, id, &format!("{secret}A"))),
        ),
        row("A11.4 API key case-flipped", swap_case(&key)),
        row(
            "A11.4 API key, secret case-flipped (checksum fixed)",
            with_checksum(&body(env, id, &swap_case(secret))),
        ),
        row("A11.4 API key upper-cased", key.to_uppercase()),
        row(
            "A11.3 refresh token, one character changed",
            change_char(&rt, 20),
        ),
        row("A11.3 refresh token truncated by one", &rt[..rt.len() - 1]),
        row("A11.3 refresh token extended by one", format!("{rt}A")),
        row("A11.4 refresh token case-flipped", swap_case(&rt)),
        row(
            "A11.4 refresh token with prefix TSR_",
            format!("TSR_{}", &rt[4..]),
        ),
        row(
            "A11 refresh token presented as a code (tsc_)",
            format!("tsc_{}", &rt[4..]),
        ),
        row("A11 refresh token without its prefix", &rt[4..]),
        row("A11 API key with = padding", format!("{key}=")),
        row("A11 prefix only: tsk_", "tsk_"),
        row("A11 prefix only: tsr_", "tsr_"),
        row("A11.6 revoked API key", revoked_key.clone()),
        row("A11.6 revoked refresh token", revoked_rt.clone()),
    ];
    for v in trailing_bit_variants(secret, 2) {
        rows.push(row(
            format!(
                "A11.3 API key secret trailing-bit variant {:?}",
                &v[v.len() - 1..]
            ),
            with_checksum(&body(env, id, &v)),
        ));
    }
    for v in trailing_bit_variants(&rt, 2) {
        rows.push(row(
            format!(
                "A11.3 refresh token trailing-bit variant {:?}",
                &v[v.len() - 1..]
            ),
            v,
        ));
    }
    for meta in [
        "' OR '1'='1",
        "x'--",
        "%",
        "_",
        "*",
        "\\",
        "\"",
        "' OR 1=1--",
        "tsk_' OR '1'='1",
        "tsr_' OR '1'='1'--",
        "tsr_%",
        "tsk_test_%_%",
        "1; DROP TABLE api_keys;--",
        "tsr_\0",
    ] {
        rows.push(row(format!("A11.5 SQL metacharacters {meta:?}"), meta));
    }
    // A11.7 the hint never changes the answer.
    for hint in [
        "access_token",
        "refresh_token",
        "api_key",
        "bogus",
        "ACCESS_TOKEN",
        "' OR '1'='1",
    ] {
        rows.push(
            row(
                format!("A11.7 refresh token with hint {hint:?}"),
                rt.clone(),
            )
            .hint(hint)
            .expect(Active),
        );
        rows.push(
            row(format!("A11.7 API key with hint {hint:?}"), key.clone())
                .hint(hint)
                .expect(Active),
        );
        rows.push(
            row(format!("A11.7 T0 with hint {hint:?}"), f.t0.token.clone())
                .hint(hint)
                .expect(Active),
        );
        rows.push(
            row(
                format!("A11.7 revoked refresh token with hint {hint:?}"),
                revoked_rt.clone(),
            )
            .hint(hint),
        );
        rows.push(
            row(
                format!("A11.7 revoked API key with hint {hint:?}"),
                revoked_key.clone(),
            )
            .hint(hint),
        );
    }
    rows.push(
        row("A11.7 T0 with a 10 KiB hint", f.t0.token.clone())
            .hint(&"h".repeat(10 * 1024))
            .expect(Active),
    );
    f.run("A11", rows).await;
}

/// A11.8: valid-id-wrong-secret and random API keys cost the same (coarsely: the
/// medians of interleaved samples within a few milliseconds; the compare itself is
/// `subtle`'s constant-time one).
#[tokio::test]
async fn a11_8_no_timing_oracle_for_api_keys() {
    let f = Fixture::start().await;
    let key = f.s.api_key(&["read:things"]).await.token;
    let parts: Vec<&str> = key.splitn(4, '_').collect();
    let right_id = || {
        with_checksum(&format!(
            "tsk_{}_{}_{}",
            parts[1],
            parts[2],
            b64(random_bytes(32))
        ))
    };
    let random = || {
        let id: String = random_bytes(8).iter().map(|b| format!("{b:02x}")).collect();
        with_checksum(&format!("tsk_{}_{id}_{}", parts[1], b64(random_bytes(32))))
    };
    // Interleaved, so load from neighbouring tests falls on both samples alike.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..150 {
        for (samples, token) in [(&mut a, right_id()), (&mut b, random())] {
            let start = Instant::now();
            let r = f.introspect(&token, "", &f.s.admin_key).await.unwrap();
            samples.push(start.elapsed());
            assert_eq!(r, IntrospectResponse::default());
        }
    }
    a.sort();
    b.sort();
    let (ma, mb) = (a[a.len() / 2], b[b.len() / 2]);
    let diff = ma.abs_diff(mb);
    assert!(
        diff < Duration::from_millis(5),
        "A11.8 medians {ma:?} (right id) vs {mb:?} (random)"
    );
}
