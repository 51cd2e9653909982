//! Unit tests of the pure grant rules, with the RFC examples where there are some.
use super::*;
use serde_json::json;

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn pkce_rfc7636_appendix_b() {
    assert_eq!(s256(VERIFIER), CHALLENGE);
    assert!(verify_pkce(VERIFIER, CHALLENGE).is_ok());
    check_code_challenge(CHALLENGE, S256).unwrap();
}

#[test]
fn pkce_verifier_rejects() {
    let cases: &[(&str, String)] = &[
        ("last char changed", format!("{}l", &VERIFIER[..42])),
        ("empty", String::new()),
        ("42 chars", "a".repeat(42)),
        ("129 chars", "a".repeat(129)),
        ("plus sign", format!("{}+", &VERIFIER[..42])),
        ("the challenge itself (plain)", CHALLENGE.to_string()),
        ("space", format!("{} ", &VERIFIER[..42])),
    ];
    for (name, v) in cases {
        let e = verify_pkce(v, CHALLENGE).unwrap_err();
        assert_eq!(e.oauth_error(), "invalid_grant", "{name}");
    }
    // 43 and 128 characters of the full alphabet are well formed.
    assert!(pkce_value_ok(&"a-._~Z9".repeat(7)[..43]));
    assert!(pkce_value_ok(&"x".repeat(128)));
}

#[test]
fn pkce_challenge_rejects() {
    let cases: &[(&str, &str, &str)] = &[
        ("plain", CHALLENGE, "plain"),
        ("missing method", CHALLENGE, ""),
        ("unknown method", CHALLENGE, "S512"),
        ("lower-case method", CHALLENGE, "s256"),
        ("missing challenge", "", S256),
        ("short", &CHALLENGE[..42], S256),
        ("long", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cMA", S256),
        (
            "padded",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM=",
            S256,
        ),
        (
            "standard alphabet",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",
            S256,
        ),
        (
            "non-canonical trailing bits",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN",
            S256,
        ),
    ];
    for (name, c, m) in cases {
        let e = check_code_challenge(c, m).unwrap_err();
        assert_eq!(e.oauth_error(), "invalid_request", "{name}");
    }
}

#[test]
fn redirect_exact_match_rows() {
    let reg = "https://app.example/cb";
    let rejected = [
        ("trailing slash", "https://app.example/cb/"),
        ("path case", "https://app.example/CB"),
        ("host case", "https://APP.example/cb"),
        ("extra query", "https://app.example/cb?x=1"),
        ("fragment", "https://app.example/cb#x"),
        ("userinfo", "https://app.example@evil.example/cb"),
        ("port", "https://app.example:8443/cb"),
        ("subdomain", "https://evil.app.example/cb"),
        ("dot segments", "https://app.example/cb/../evil"),
        ("percent-encoded", "https://app.example/%63b"),
        ("scheme", "http://app.example/cb"),
        ("empty", ""),
    ];
    for (name, p) in rejected {
        assert!(!redirect_uri_matches(reg, p), "{name}");
    }
    assert!(redirect_uri_matches(reg, reg));
}

#[test]
fn redirect_loopback_port_may_vary() {
    let v4 = "http://127.0.0.1/cb";
    assert!(redirect_uri_matches(v4, "http://127.0.0.1:51234/cb"));
    assert!(redirect_uri_matches(
        "http://127.0.0.1:80/cb",
        "http://127.0.0.1:9/cb"
    ));
    assert!(redirect_uri_matches(
        "http://[::1]:1/cb",
        "http://[::1]:65535/cb"
    ));
    let rejected = [
        ("other path", "http://127.0.0.1:5000/other"),
        ("other family", "http://[::1]:5000/cb"),
        ("localhost", "http://localhost:5000/cb"),
        ("port 0", "http://127.0.0.1:0/cb"),
        ("port too big", "http://127.0.0.1:65536/cb"),
        ("empty port", "http://127.0.0.1:/cb"),
        ("dns suffix", "http://127.0.0.1.evil.example/cb"),
        ("userinfo", "http://127.0.0.1@evil.example/cb"),
        ("https", "https://127.0.0.1:5000/cb"),
        ("extra query", "http://127.0.0.1:5000/cb?x"),
    ];
    for (name, p) in rejected {
        assert!(!redirect_uri_matches(v4, p), "{name}");
    }
}

#[test]
fn redirect_registration_rules() {
    for ok in [
        "https://app.example/cb",
        "https://app.example:8443/oauth/cb?tenant=a",
        "http://127.0.0.1/cb",
        "http://127.0.0.1:8080/cb",
        "http://[::1]:8080/",
        "http://127.0.0.1",
    ] {
        check_redirect_registration(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (name, bad) in [
        ("plain http", "http://app.example/cb"),
        ("http localhost", "http://localhost:8080/cb"),
        ("fragment", "https://app.example/cb#frag"),
        ("userinfo", "https://user@app.example/cb"),
        ("backslash", "https://app.example\\@evil.example/cb"),
        ("no host", "https:///cb"),
        ("custom scheme", "com.example.app:/cb"),
        ("javascript", "javascript:alert(1)"),
        ("relative", "/cb"),
        ("space", "https://app.example/c b"),
        ("control", "https://app.example/c\nb"),
        ("non-ascii", "https://äpp.example/cb"),
        ("empty", ""),
        ("upper-case scheme", "HTTPS://app.example/cb"),
    ] {
        assert!(check_redirect_registration(bad).is_err(), "{name}");
    }
    let long = format!("https://app.example/{}", "a".repeat(MAX_REDIRECT_URI_LEN));
    assert!(check_redirect_registration(&long).is_err());
}

#[test]
fn scope_narrowing() {
    let held = strings(&["read", "write", "tessera:issue"]);
    assert_eq!(
        grant_scopes(&[], &held).unwrap(),
        strings(&["read", "write"])
    );
    assert_eq!(
        grant_scopes(&strings(&["write", "read", "read"]), &held).unwrap(),
        strings(&["read", "write"])
    );
    let e = grant_scopes(&strings(&["admin"]), &held).unwrap_err();
    assert_eq!(e.oauth_error(), "invalid_scope");
    let e = grant_scopes(&strings(&["tessera:issue"]), &held).unwrap_err();
    assert_eq!(e.oauth_error(), "invalid_scope");
    let e = grant_scopes(&strings(&["a b"]), &held).unwrap_err();
    assert_eq!(e.oauth_error(), "invalid_request");
}

#[test]
fn only_an_audience_of_the_subject_token_may_exchange_it() {
    let aud = strings(&["gateway", "0123456789abcdef"]);
    assert!(is_audience(&aud, "0123456789abcdef", "other-name"));
    assert!(is_audience(&aud, "fedcba9876543210", "gateway"));
    assert!(!is_audience(&aud, "fedcba9876543210", "ledger"));
    assert!(!is_audience(&aud, "fedcba9876543210", ""));
    assert!(!is_audience(&aud, "0123456789ABCDEF", "Gateway"), "exact");
    assert!(!is_audience(&strings(&[""]), "k", ""));
}

#[test]
fn exchange_audiences_bound_the_requested_audience() {
    let allowed = strings(&["ledger", "payments-api"]);
    assert_eq!(
        exchange_audience(&[], "k1", &allowed).unwrap(),
        strings(&["k1"]),
        "none asked: the caller itself"
    );
    assert_eq!(
        exchange_audience(&strings(&["ledger"]), "k1", &allowed).unwrap(),
        strings(&["ledger"])
    );
    let rows: &[(&str, &[&str], &str)] = &[
        ("not listed", &["admin-api"], "invalid_target"),
        ("one of two not listed", &["ledger", "x"], "invalid_target"),
        ("own id not listed", &["k1"], "invalid_target"),
        ("prefix of a listed one", &["ledg"], "invalid_target"),
        ("space inside", &["ledger payments-api"], "invalid_request"),
        ("blank", &[" "], "invalid_request"),
        ("empty", &[""], "invalid_request"),
    ];
    for (name, asked, want) in rows {
        let e = exchange_audience(&strings(asked), "k1", &allowed).unwrap_err();
        assert_eq!(e.oauth_error(), *want, "{name}");
    }
}

#[test]
fn act_nesting() {
    let first = actor_claim("svc-a", "k1", None).unwrap();
    assert_eq!(first, json!({"sub": "svc-a", "client_id": "k1"}));
    let second = actor_claim("svc-b", "k2", Some(&first)).unwrap();
    assert_eq!(
        second,
        json!({"sub": "svc-b", "client_id": "k2", "act": {"sub": "svc-a", "client_id": "k1"}})
    );
    assert_eq!(act_depth(Some(&second)), 2);
    let mut chain = None;
    for i in 0..MAX_ACT_DEPTH {
        chain = Some(actor_claim("s", &i.to_string(), chain.as_ref()).unwrap());
    }
    assert!(actor_claim("s", "x", chain.as_ref()).is_err());
}

#[test]
fn refresh_use_honours_only_a_timely_retry_by_the_same_client() {
    let rec = |presenter, until, successor_used| GraceRecord {
        presenter,
        until,
        successor_used,
    };
    let (used, exp) = (Some(100), 1_000);
    // (name, used_at, now, grace record, presenter, expected)
    type Case<'a> = (
        &'a str,
        Option<i64>,
        i64,
        Option<GraceRecord<'a>>,
        &'a str,
        RefreshUse,
    );
    let cases: &[Case<'_>] = &[
        ("unused token", None, 100, None, "c1", RefreshUse::First),
        (
            "unused, stale record ignored",
            None,
            100,
            Some(rec("c2", 0, true)),
            "c1",
            RefreshUse::First,
        ),
        (
            "grace 0: nothing kept",
            used,
            101,
            None,
            "c1",
            RefreshUse::Reuse,
        ),
        (
            "retry inside window",
            used,
            120,
            Some(rec("c1", 130, false)),
            "c1",
            RefreshUse::GraceRetry,
        ),
        (
            "retry at the window's last second",
            used,
            130,
            Some(rec("c1", 130, false)),
            "c1",
            RefreshUse::GraceRetry,
        ),
        (
            "after the window",
            used,
            131,
            Some(rec("c1", 130, false)),
            "c1",
            RefreshUse::Reuse,
        ),
        (
            "other client inside window",
            used,
            120,
            Some(rec("c1", 130, false)),
            "c2",
            RefreshUse::Reuse,
        ),
        (
            "anonymous vs client",
            used,
            120,
            Some(rec("c1", 130, false)),
            "",
            RefreshUse::Reuse,
        ),
        (
            "successor already used",
            used,
            120,
            Some(rec("c1", 130, true)),
            "c1",
            RefreshUse::Reuse,
        ),
        (
            "token expired inside window",
            used,
            1_000,
            Some(rec("c1", 2_000, false)),
            "c1",
            RefreshUse::Reuse,
        ),
    ];
    for (name, used_at, now, grace, presenter, want) in cases {
        assert_eq!(
            refresh_use(*used_at, exp, *now, *grace, presenter),
            *want,
            "{name}"
        );
    }
}

#[test]
fn code_use_tells_first_use_expiry_and_replay_apart() {
    let rows = [
        ("unused, young", None, 100, 99, CodeUse::First),
        ("unused, at expiry", None, 100, 100, CodeUse::Expired),
        ("unused, past expiry", None, 100, 160, CodeUse::Expired),
        ("used, young", Some(90), 100, 95, CodeUse::Replay),
        ("used, past expiry", Some(90), 100, 500, CodeUse::Replay),
    ];
    for (name, used_at, expires_at, now, want) in rows {
        assert_eq!(code_use(used_at, expires_at, now), want, "{name}");
    }
}
