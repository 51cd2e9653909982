//! Guarding a tonic service: take the bearer token from `authorization`, ask
//! [`Verifier::is_active`], refuse or hand the claims to the handler in the request's
//! extensions as [`VerifiedClaims`].
//!
//! ```no_run
//! # async fn run(verifier: tessera_verifier::Verifier) {
//! # let svc = tonic_health::server::health_reporter().1;
//! tonic::transport::Server::builder()
//!     .layer(verifier.layer())
//!     .add_service(svc);
//! # }
//! ```

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::{Claims, Reason, Verifier};

/// The verified token's claims, in the extensions of every request that got through.
#[derive(Clone, Debug)]
pub struct VerifiedClaims(pub Claims);

/// The interceptor behind [`Verifier::interceptor`] and [`Verifier::layer`].
#[derive(Clone, Debug)]
pub struct VerifierInterceptor {
    verifier: Verifier,
}

impl VerifierInterceptor {
    /// Guards with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        VerifierInterceptor { verifier }
    }
}

/// The token from `authorization: Bearer <token>` (scheme case-insensitive, RFC 6750).
fn bearer<T>(req: &Request<T>) -> Option<&str> {
    let value = req.metadata().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Interceptor for VerifierInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = bearer(&req) else {
            return Err(Status::unauthenticated("missing bearer token"));
        };
        match self.verifier.is_active(token) {
            Ok(claims) => {
                req.extensions_mut().insert(VerifiedClaims(claims));
                Ok(req)
            }
            // Never says why: an attacker learns nothing from the refusal.
            Err(Reason::Inactive(_)) => Err(Status::unauthenticated("token is not active")),
            // Not the caller's fault and worth a retry, yet still a refusal.
            Err(Reason::Stale) => Err(Status::unavailable(
                "token cannot be verified right now; retry",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(v: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert("authorization", v.parse().expect("ascii"));
        r
    }

    #[test]
    fn bearer_extraction() {
        assert_eq!(bearer(&with_auth("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&with_auth("bearer abc")), Some("abc"));
        assert_eq!(bearer(&with_auth("Basic abc")), None);
        assert_eq!(bearer(&with_auth("Bearer ")), None);
        assert_eq!(bearer(&with_auth("Bearer")), None);
        assert_eq!(bearer(&Request::new(())), None);
    }
}
