//! The grant methods as the HTTP token endpoint calls them: client authentication by
//! `client_id` + secret, the `client_id` parameter, and the RFC 6749 error codes.

use std::sync::Arc;

use tessera::clock::Clock;
use tessera::secret::Secret;
use tessera::test_support::ACCESS_TOKEN_TYPE;
use tessera::test_support::Authority;
use tessera::test_support::Caller;
use tessera::test_support::Error;
use tessera::test_support::NewApiKey;
use tessera::test_support::{
    ClientCredentialsRequest, ClientRegistration, CodeRedemption, CodeRequest, RefreshRequest,
    TokenExchangeRequest,
};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "https://app.example/cb";

struct Fixture {
    authority: Authority,
    admin: Caller,
    _tmp: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let config = tessera::config::Config {
        data_dir: tmp.path().to_path_buf(),
        issuer: "https://tessera.test".into(),
        ..Default::default()
    };
    let authority = Authority::open(Arc::new(config), Clock::system())
        .await
        .unwrap();
    let key = std::fs::read_to_string(tmp.path().join("admin.key")).unwrap();
    let id = tessera::apikeys::parse(key.trim()).unwrap().id.to_string();
    let admin = authority.authenticate_client(&id, key.trim()).unwrap();
    Fixture {
        authority,
        admin: caller(Some(admin)),
        _tmp: tmp,
    }
}

fn caller(principal: Option<Arc<tessera::test_support::Principal>>) -> Caller {
    Caller {
        principal,
        request_id: "test".into(),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Registers a client and returns (client_id, secret).
async fn client(f: &Fixture, public: bool) -> (String, String) {
    let reg = ClientRegistration {
        name: "app".into(),
        public,
        redirect_uris: strings(&[REDIRECT]),
        scopes: strings(&["read", "write"]),
    };
    let issued = f.authority.register_client(&f.admin, reg).await.unwrap();
    (issued.token_id.clone(), issued.token.expose().to_owned())
}

async fn code(f: &Fixture, client_id: &str) -> String {
    let req = CodeRequest {
        client_id: client_id.into(),
        redirect_uri: REDIRECT.into(),
        subject: "alice".into(),
        scopes: strings(&["read"]),
        code_challenge: CHALLENGE.into(),
        code_challenge_method: "S256".into(),
    };
    let issued = f
        .authority
        .issue_authorization_code(&f.admin, req)
        .await
        .unwrap();
    issued.token.expose().to_owned()
}

fn redemption(client_id: &str, code: &str) -> CodeRedemption {
    CodeRedemption {
        client_id: client_id.into(),
        code: Secret::new(code),
        code_verifier: Secret::new(VERIFIER),
        redirect_uri: REDIRECT.into(),
    }
}

#[tokio::test]
async fn client_secret_authentication() {
    let f = fixture().await;
    let (id, secret) = client(&f, false).await;
    let p = f.authority.authenticate_client(&id, &secret).unwrap();
    assert_eq!(&*p.key_id, id);
    assert_eq!(&*p.owner, "app");
    for (name, cid, sec) in [
        ("wrong id", "0123456789abcdef", secret.as_str()),
        ("wrong secret", id.as_str(), "tsk_oauth_0123456789abcdef_x"),
        ("empty", id.as_str(), ""),
    ] {
        let e = f.authority.authenticate_client(cid, sec).unwrap_err();
        assert_eq!(
            (e.oauth_error(), e.http_status().as_u16()),
            ("invalid_client", 401),
            "{name}"
        );
    }

    // Authenticated: the code redeems with or without client_id.
    let c = caller(Some(p.clone()));
    let code1 = code(&f, &id).await;
    let t = f
        .authority
        .grant_authorization_code(&c, redemption(&id, &code1))
        .await
        .unwrap();
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.expires_at - t.issued_at, 15 * 60, "expires_in");
    assert!(t.issued_token_type.is_empty());
    // Not authenticated: invalid_client, 401.
    let code2 = code(&f, &id).await;
    let e = f
        .authority
        .grant_authorization_code(&caller(None), redemption(&id, &code2))
        .await
        .unwrap_err();
    assert_eq!(e.oauth_error(), "invalid_client");
    // Authenticated as one client, naming another.
    let (other, _) = client(&f, true).await;
    let e = f
        .authority
        .grant_authorization_code(&c, redemption(&other, &code2))
        .await
        .unwrap_err();
    assert_eq!(e.oauth_error(), "invalid_client");

    // Refresh with the client_id parameter: it must be the token's client.
    let r = |client_id: &str| RefreshRequest {
        client_id: client_id.into(),
        refresh_token: t.refresh_token.clone(),
        scopes: vec![],
    };
    let e = f
        .authority
        .grant_refresh_token(&caller(None), r(&id))
        .await
        .unwrap_err();
    assert_eq!(
        e.oauth_error(),
        "invalid_client",
        "confidential: must authenticate"
    );
    let e = f.authority.grant_refresh_token(&c, r("someone-else")).await;
    assert_eq!(
        e.unwrap_err().oauth_error(),
        "invalid_client",
        "named != authenticated"
    );
    assert!(f.authority.grant_refresh_token(&c, r(&id)).await.is_ok());
    let e = f
        .authority
        .grant_refresh_token(&c, r(&id))
        .await
        .unwrap_err();
    assert_eq!(
        (e.oauth_error(), e.http_status().as_u16()),
        ("invalid_grant", 400),
        "reuse"
    );
}

#[tokio::test]
async fn public_client_refresh_is_bound_by_client_id() {
    let f = fixture().await;
    let (public, _) = client(&f, true).await;
    let (other, _) = client(&f, true).await;
    let code = code(&f, &public).await;
    let anonymous = caller(None);
    let t = f
        .authority
        .grant_authorization_code(&anonymous, redemption(&public, &code))
        .await
        .unwrap();
    let r = |client_id: &str| RefreshRequest {
        client_id: client_id.into(),
        refresh_token: t.refresh_token.clone(),
        scopes: vec![],
    };
    let e = f.authority.grant_refresh_token(&anonymous, r(&other)).await;
    assert_eq!(e.unwrap_err().oauth_error(), "invalid_grant", "C4.4");
    let narrower = RefreshRequest {
        scopes: strings(&["write", "admin"]),
        ..r(&public)
    };
    let e = f.authority.grant_refresh_token(&anonymous, narrower).await;
    assert_eq!(e.unwrap_err().oauth_error(), "invalid_scope", "C4.5");
    let ok = f
        .authority
        .grant_refresh_token(&anonymous, r(&public))
        .await;
    assert_eq!(
        ok.unwrap().scopes,
        vec!["read"],
        "neither refusal consumed it"
    );
    let e = f.authority.grant_refresh_token(&anonymous, r("")).await;
    assert_eq!(e.unwrap_err().oauth_error(), "invalid_grant", "reuse");
}

#[tokio::test]
async fn public_clients_cannot_use_client_credentials() {
    let f = fixture().await;
    let (public, _) = client(&f, true).await;
    let req = |client_id: &str| ClientCredentialsRequest {
        client_id: client_id.into(),
        ..Default::default()
    };
    let e = f
        .authority
        .grant_client_credentials(&caller(None), req(&public))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnauthorizedClient(_)), "{e:?}");
    assert_eq!(e.oauth_error(), "unauthorized_client");
    assert_eq!(
        tonic::Status::from(e).code(),
        tonic::Code::FailedPrecondition
    );
    let e = f
        .authority
        .grant_client_credentials(&caller(None), req("unknown"))
        .await
        .unwrap_err();
    assert_eq!(e.oauth_error(), "invalid_client");

    let (conf, secret) = client(&f, false).await;
    let p = f.authority.authenticate_client(&conf, &secret).unwrap();
    let t = f
        .authority
        .grant_client_credentials(&caller(Some(p.clone())), req(&conf))
        .await
        .unwrap();
    assert_eq!(t.scopes, vec!["read", "write"]);
    let wider = ClientCredentialsRequest {
        scopes: strings(&["admin"]),
        ..Default::default()
    };
    let e = f
        .authority
        .grant_client_credentials(&caller(Some(p)), wider)
        .await
        .unwrap_err();
    assert_eq!(e.oauth_error(), "invalid_scope");
}

#[tokio::test]
async fn token_exchange_errors_follow_rfc8693() {
    let f = fixture().await;
    let issued = f
        .authority
        .issue_api_key(
            &f.admin,
            NewApiKey {
                owner: "team".into(),
                name: "svc".into(),
                environment: "test".into(),
                exchange_audiences: strings(&["next"]),
                ..NewApiKey::default()
            },
        )
        .await
        .unwrap();
    let key = issued.token.expose().to_owned();
    let svc = caller(Some(
        f.authority
            .authenticate_client(&issued.token_id, &key)
            .unwrap(),
    ));
    let req = |token: &str, ty: &str| TokenExchangeRequest {
        subject_token: Secret::new(token),
        subject_token_type: ty.into(),
        ..Default::default()
    };
    let e = f
        .authority
        .grant_token_exchange(&svc, req("a.b.c", ACCESS_TOKEN_TYPE))
        .await
        .unwrap_err();
    assert_eq!(e.oauth_error(), "invalid_request", "RFC 8693 §2.2.2");
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unauthenticated);
    let e = f
        .authority
        .grant_token_exchange(&svc, req("a.b.c", "urn:x"))
        .await
        .unwrap_err();
    assert_eq!(e.oauth_error(), "invalid_request");
    // RFC 8693 §2.2.2: a caller the service will not issue for gets invalid_target.
    let e = f
        .authority
        .grant_token_exchange(&f.admin, req("a.b.c", ACCESS_TOKEN_TYPE))
        .await
        .unwrap_err();
    assert_eq!(
        e.oauth_error(),
        "invalid_target",
        "no exchange_audiences, no exchange (not even for an admin key)"
    );
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::PermissionDenied);
}
