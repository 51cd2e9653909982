//! A13. Response hygiene

use tessera::proto::IntrospectRequest;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn a13_caller_must_be_authorized() {
    let f = Fixture::start().await;
    let narrow = f.s.api_key(&["read:things"]).await.token;
    let tokens = [
        ("T0", f.t0.token.clone()),
        ("garbage", "garbage".to_string()),
        ("empty", String::new()),
    ];
    for (name, token) in &tokens {
        let req = IntrospectRequest {
            token: token.clone(),
            token_type_hint: String::new(),
        };
        let e = f
            .client
            .clone()
            .introspect(tonic::Request::new(req))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::Unauthenticated,
            "A13.3 no credential, {name}"
        );
        for (what, key, code) in [
            (
                "bad key",
                "tsk_test_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                Code::Unauthenticated,
            ),
            (
                "an access token as credential",
                f.t0.token.as_str(),
                Code::Unauthenticated,
            ),
            (
                "key without tessera:introspect",
                narrow.as_str(),
                Code::PermissionDenied,
            ),
        ] {
            let e = f.introspect(token, "", key).await.unwrap_err();
            assert_eq!(e.code(), code, "A13.3 {what}, {name}");
            assert!(
                token.is_empty() || !e.message().contains(token.as_str()),
                "A13.3 {what}: token echoed"
            );
        }
    }
}
