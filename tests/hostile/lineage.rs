//! Revocation follows lineage: a token minted by token exchange dies with its
//! ancestor, however the ancestor was born and however it dies (contract Part 2,
//! "Revocation follows lineage"; security cases D6.1, A12.5, C4.3).
//!
//! The table crosses every way a token can be born with every way its ancestor can
//! die; each row checks the derived token is active first (so the row can fail), kills
//! the ancestor, and expects the derived token inactive through `Introspect`.

use crate::common::{TestServer, authed};
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    AccessTokenSpec, ApiKeySpec, AuthorizationCodeGrant, AuthorizationCodeSpec,
    BumpTokenVersionRequest, ClientCredentialsGrant, ClientSpec, ExchangeRequest, ExchangeResponse,
    IssueRequest, IssueResponse, RefreshTokenGrant, RevokeRequest, TokenExchangeGrant,
};
use tonic::{Code, Request, Status};

/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const AT_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const REDIRECT: &str = "https://app.example/cb";
/// The first hop: the service every non-code subject token is issued to.
const HOP1: &str = "svc-hop1";
/// The second hop: what the first hop exchanges for.
const HOP2: &str = "svc-hop2";

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn issue(s: &TestServer, c: Credential) -> IssueResponse {
    s.issue(IssueRequest {
        credential: Some(c),
    })
    .await
    .unwrap()
}

async fn exchange(
    s: &TestServer,
    grant: Grant,
    key: Option<&str>,
) -> Result<ExchangeResponse, Status> {
    let msg = ExchangeRequest { grant: Some(grant) };
    let req = match key {
        Some(k) => authed(msg, k),
        None => Request::new(msg),
    };
    s.tokens().await.exchange(req).await.map(|r| r.into_inner())
}

fn refresh(rt: &str) -> Grant {
    Grant::RefreshToken(RefreshTokenGrant {
        refresh_token: rt.into(),
        scopes: Vec::new(),
    })
}

fn redeem(code: &str, client_id: &str) -> Grant {
    Grant::AuthorizationCode(AuthorizationCodeGrant {
        code: code.into(),
        code_verifier: VERIFIER.into(),
        redirect_uri: REDIRECT.into(),
        client_id: client_id.into(),
    })
}

/// `key` exchanges `subject` for a token for `audience`.
async fn exchange_for(
    s: &TestServer,
    subject: &str,
    key: &str,
    audience: &str,
) -> Result<ExchangeResponse, Status> {
    let grant = Grant::TokenExchange(TokenExchangeGrant {
        subject_token: subject.into(),
        subject_token_type: AT_TYPE.into(),
        audience: strings(&[audience]),
        scopes: Vec::new(),
    });
    exchange(s, grant, Some(key)).await
}

async fn active(s: &TestServer, token: &str) -> bool {
    s.introspect(token).await.unwrap().active
}

async fn revoke(s: &TestServer, token: &str, token_id: &str) {
    let req = RevokeRequest {
        token: token.into(),
        token_id: token_id.into(),
        token_type_hint: String::new(),
    };
    s.revoke(req).await.unwrap();
}

async fn bump(s: &TestServer, subject: &str) {
    let req = BumpTokenVersionRequest {
        subject: subject.into(),
        reason: "lineage test".into(),
    };
    s.bump(req).await.unwrap();
}

/// How the ancestor token was born.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Origin {
    IssueAccessToken,
    IssueWithRefresh,
    RefreshRotation,
    ClientCredentials,
    AuthorizationCode,
    RotationAfterCode,
}

const ORIGINS: [Origin; 6] = [
    Origin::IssueAccessToken,
    Origin::IssueWithRefresh,
    Origin::RefreshRotation,
    Origin::ClientCredentials,
    Origin::AuthorizationCode,
    Origin::RotationAfterCode,
];

/// How the ancestor dies.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Death {
    RevokeByToken,
    RevokeByTokenId,
    RevokeRefreshFamily,
    RefreshReuseDetected,
    CodeReplay,
    BumpTokenVersion,
    /// Depth 2 only: the intermediate exchange result is revoked, not the root.
    RevokeIntermediate,
}

const DEATHS: [Death; 7] = [
    Death::RevokeByToken,
    Death::RevokeByTokenId,
    Death::RevokeRefreshFamily,
    Death::RefreshReuseDetected,
    Death::CodeReplay,
    Death::BumpTokenVersion,
    Death::RevokeIntermediate,
];

fn applies(origin: Origin, death: Death, depth: usize) -> bool {
    let family = !matches!(origin, Origin::IssueAccessToken | Origin::ClientCredentials);
    let code = matches!(
        origin,
        Origin::AuthorizationCode | Origin::RotationAfterCode
    );
    match death {
        Death::RevokeRefreshFamily | Death::RefreshReuseDetected => family,
        Death::CodeReplay => code,
        Death::RevokeIntermediate => depth == 2,
        _ => true,
    }
}

/// The ancestor token and what it takes to kill it.
struct Root {
    token: String,
    jti: String,
    /// `sub`, for a version bump.
    subject: String,
    /// An API key that is an audience of `token` and may exchange it for [`HOP2`].
    hop1_key: String,
    /// The family's current refresh token, if the root came from one.
    refresh_token: Option<String>,
    /// The code that started the family, and its client.
    code: Option<(String, String)>,
}

/// The fixed cast: a public OAuth client and the second-hop service.
struct Cast {
    client_id: String,
    client_hop1_key: String,
    hop1_key: String,
    hop2_key: String,
}

impl Cast {
    async fn new(s: &TestServer) -> Cast {
        let client = issue(
            s,
            Credential::Client(ClientSpec {
                name: "lineage-app".into(),
                public: true,
                redirect_uris: strings(&[REDIRECT]),
                scopes: strings(&["read:x", "write:x"]),
                ..Default::default()
            }),
        )
        .await;
        // A code-flow token's audience is the client id: the app's backend key
        // carries it as its service name.
        let client_hop1_key = s.exchanger(&client.token_id, &[HOP2]).await.token;
        Cast {
            hop1_key: s.exchanger(HOP1, &[HOP2]).await.token,
            hop2_key: s.exchanger(HOP2, &["svc-hop3"]).await.token,
            client_hop1_key,
            client_id: client.token_id,
        }
    }

    async fn access_token(
        &self,
        s: &TestServer,
        subject: &str,
        with_refresh: bool,
    ) -> IssueResponse {
        issue(
            s,
            Credential::AccessToken(AccessTokenSpec {
                subject: subject.into(),
                audience: strings(&[HOP1]),
                scopes: strings(&["read:x", "write:x"]),
                refresh_token: with_refresh,
                ..AccessTokenSpec::default()
            }),
        )
        .await
    }

    async fn code(&self, s: &TestServer, subject: &str) -> String {
        issue(
            s,
            Credential::AuthorizationCode(AuthorizationCodeSpec {
                client_id: self.client_id.clone(),
                redirect_uri: REDIRECT.into(),
                subject: subject.into(),
                scopes: strings(&["read:x"]),
                code_challenge: CHALLENGE.into(),
                code_challenge_method: "S256".into(),
            }),
        )
        .await
        .token
    }

    async fn born(&self, s: &TestServer, origin: Origin, subject: &str) -> Root {
        let root = |token: String, jti: String, subject: &str, hop1_key: &str| Root {
            token,
            jti,
            subject: subject.into(),
            hop1_key: hop1_key.into(),
            refresh_token: None,
            code: None,
        };
        match origin {
            Origin::IssueAccessToken => {
                let t = self.access_token(s, subject, false).await;
                root(t.token, t.token_id, subject, &self.hop1_key)
            }
            Origin::IssueWithRefresh => {
                let t = self.access_token(s, subject, true).await;
                Root {
                    refresh_token: Some(t.refresh_token),
                    ..root(t.token, t.token_id, subject, &self.hop1_key)
                }
            }
            Origin::RefreshRotation => {
                let t = self.access_token(s, subject, true).await;
                let r = exchange(s, refresh(&t.refresh_token), None).await.unwrap();
                Root {
                    refresh_token: Some(r.refresh_token),
                    ..root(
                        r.access_token.clone(),
                        jti_of(&r.access_token),
                        subject,
                        &self.hop1_key,
                    )
                }
            }
            Origin::ClientCredentials => {
                // A key of its own, so a bump of its client id touches this row only;
                // its token's audience defaults to its own id, so it exchanges itself.
                let key = s
                    .api_key_with(ApiKeySpec {
                        name: format!("cc-{subject}"),
                        scopes: strings(&["read:x"]),
                        exchange_audiences: strings(&[HOP2]),
                        ..ApiKeySpec::default()
                    })
                    .await;
                let grant = Grant::ClientCredentials(ClientCredentialsGrant::default());
                let t = exchange(s, grant, Some(&key.token)).await.unwrap();
                root(
                    t.access_token.clone(),
                    jti_of(&t.access_token),
                    &key.token_id,
                    &key.token,
                )
            }
            Origin::AuthorizationCode | Origin::RotationAfterCode => {
                let code = self.code(s, subject).await;
                let t = exchange(s, redeem(&code, &self.client_id), None)
                    .await
                    .unwrap();
                let t = if origin == Origin::RotationAfterCode {
                    exchange(s, refresh(&t.refresh_token), None).await.unwrap()
                } else {
                    t
                };
                Root {
                    refresh_token: Some(t.refresh_token.clone()),
                    code: Some((code, self.client_id.clone())),
                    ..root(
                        t.access_token.clone(),
                        jti_of(&t.access_token),
                        subject,
                        &self.client_hop1_key,
                    )
                }
            }
        }
    }
}

fn jti_of(jwt: &str) -> String {
    let (_, payload) = crate::common::mint::decode(jwt);
    payload["jti"].as_str().unwrap().to_string()
}

/// Kills the ancestor (or, for [`Death::RevokeIntermediate`], the middle token).
async fn kill(s: &TestServer, root: &Root, intermediate: &str, death: Death) {
    match death {
        Death::RevokeByToken => revoke(s, &root.token, "").await,
        Death::RevokeByTokenId => revoke(s, "", &root.jti).await,
        Death::RevokeRefreshFamily => revoke(s, root.refresh_token.as_ref().unwrap(), "").await,
        Death::RefreshReuseDetected => {
            let rt = root.refresh_token.as_ref().unwrap();
            exchange(s, refresh(rt), None)
                .await
                .expect("first use rotates");
            let e = exchange(s, refresh(rt), None).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "reuse is refused");
        }
        Death::CodeReplay => {
            let (code, client) = root.code.as_ref().unwrap();
            let e = exchange(s, redeem(code, client), None).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "replay is refused");
        }
        Death::BumpTokenVersion => bump(s, &root.subject).await,
        Death::RevokeIntermediate => revoke(s, intermediate, "").await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_derived_token_dies_with_its_ancestor() {
    let s = TestServer::start().await;
    let cast = Cast::new(&s).await;
    let mut failures = Vec::new();
    let mut rows = 0;
    for (i, origin) in ORIGINS.into_iter().enumerate() {
        for depth in [1, 2] {
            for (j, death) in DEATHS.into_iter().enumerate() {
                if !applies(origin, death, depth) {
                    continue;
                }
                rows += 1;
                let kind = if depth == 1 {
                    "token exchange"
                } else {
                    "exchange of an exchange"
                };
                let name =
                    format!("{kind} of a token born by {origin:?}, ancestor dies by {death:?}");
                let subject = format!("user-{i}-{depth}-{j}");
                let root = cast.born(&s, origin, &subject).await;
                let child = exchange_for(&s, &root.token, &root.hop1_key, HOP2)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: first exchange: {e}"))
                    .access_token;
                let derived = if depth == 1 {
                    child.clone()
                } else {
                    exchange_for(&s, &child, &cast.hop2_key, "svc-hop3")
                        .await
                        .unwrap_or_else(|e| panic!("{name}: second exchange: {e}"))
                        .access_token
                };
                if !active(&s, &derived).await {
                    failures.push(format!("{name}: derived token inactive before the death"));
                    continue;
                }
                kill(&s, &root, &child, death).await;
                if active(&s, &derived).await {
                    failures.push(format!("{name}: derived token still active"));
                }
                if depth == 2 && active(&s, &child).await {
                    failures.push(format!("{name}: intermediate token still active"));
                }
            }
        }
    }
    assert_eq!(rows, 62, "the table covers every applicable combination");
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Durable: the cascade is in the store, not only in memory.
    let root = cast.born(&s, Origin::IssueAccessToken, "restart").await;
    let child = exchange_for(&s, &root.token, &root.hop1_key, HOP2)
        .await
        .unwrap()
        .access_token;
    revoke(&s, &root.token, "").await;
    let s = s.restart().await;
    assert!(
        !active(&s, &child).await,
        "revoked child stays revoked after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exchanges_racing_revocations_leave_no_child_of_a_revoked_subject_active() {
    let s = TestServer::start().await;
    let cast = Cast::new(&s).await;
    let tk = s.tokens().await;
    let deaths = [
        Death::RevokeByToken,
        Death::RevokeByTokenId,
        Death::RevokeRefreshFamily,
        Death::BumpTokenVersion,
    ];
    let (mut granted, mut refused) = (0, 0);
    for trial in 0..40 {
        let death = deaths[trial % deaths.len()];
        let root = cast
            .born(&s, Origin::IssueWithRefresh, &format!("racer-{trial}"))
            .await;
        // Exchanges on their own tasks, while this task revokes their subject.
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let mut c = tk.clone();
            let grant = Grant::TokenExchange(TokenExchangeGrant {
                subject_token: root.token.clone(),
                subject_token_type: AT_TYPE.into(),
                audience: strings(&[HOP2]),
                scopes: Vec::new(),
            });
            let req = authed(ExchangeRequest { grant: Some(grant) }, &root.hop1_key);
            racers.spawn(async move { c.exchange(req).await.map(|r| r.into_inner()) });
        }
        kill(&s, &root, "", death).await;
        while let Some(r) = racers.join_next().await {
            match r.unwrap() {
                Ok(t) => {
                    granted += 1;
                    assert!(
                        !active(&s, &t.access_token).await,
                        "trial {trial} ({death:?}): a child of a revoked subject is active"
                    );
                }
                Err(e) => {
                    refused += 1;
                    assert_eq!(e.code(), Code::Unauthenticated, "trial {trial}: {e}");
                }
            }
        }
        assert!(
            !active(&s, &root.token).await,
            "trial {trial}: the subject died"
        );
    }
    eprintln!("exchanges granted {granted}, refused {refused}");
    assert!(
        granted > 0,
        "no exchange won a race: the test proved nothing"
    );
}
