//! `status`: health, the published JWKS and, with a key, the active signing key.

use serde_json::{Value, json};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{Failure, Output, Remote, code_name, exit};
use crate::admin::render;
use crate::proto::{GetJwksRequest, ListSigningKeysRequest};

impl Remote {
    /// `status`: health (open), the JWKS (open), and with a key, the signing keys.
    pub(crate) async fn status(&self) -> Result<Output, Failure> {
        let mut health = HealthClient::new(self.channel.clone());
        let mut services = Vec::new();
        let mut serving = true;
        for service in ["", "tessera.v1.TokenService", "tessera.v1.KeyService"] {
            let state = match health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
            {
                Ok(r) => match r.into_inner().status() {
                    ServingStatus::Serving => "SERVING",
                    ServingStatus::NotServing => "NOT_SERVING",
                    ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
                    ServingStatus::Unknown => "UNKNOWN",
                },
                Err(s) if s.code() == Code::NotFound => "SERVICE_UNKNOWN",
                Err(s) => return Err(s.into()),
            };
            serving &= state == "SERVING";
            services.push((
                if service.is_empty() {
                    "server"
                } else {
                    service
                },
                state,
            ));
        }
        let jwks = self
            .keys()
            .get_jwks(GetJwksRequest {})
            .await?
            .into_inner()
            .jwks_json;
        let published: Vec<(String, String)> = serde_json::from_str::<Value>(&jwks)
            .ok()
            .and_then(|v| v.get("keys").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .map(|k| {
                let s = |f: &str| k.get(f).and_then(Value::as_str).unwrap_or("?").to_string();
                (s("kid"), s("alg"))
            })
            .collect();
        // Signing-key states need tessera:admin; without a key or the scope, say so.
        let signing = match &self.key {
            None => Err("no API key given".to_string()),
            Some(_) => match self
                .keys()
                .list_signing_keys(self.authed(ListSigningKeysRequest {})?)
                .await
            {
                Ok(r) => Ok(r.into_inner().keys),
                Err(s) => Err(format!("{}: {}", code_name(s.code()), s.message())),
            },
        };

        let mut pairs = vec![("address", self.addr.clone())];
        for (name, state) in &services {
            pairs.push((name, state.to_string()));
        }
        pairs.push((
            "jwks",
            format!(
                "{} key(s): {}",
                published.len(),
                published
                    .iter()
                    .map(|(kid, alg)| format!("{kid} ({alg})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        let active = match &signing {
            Ok(keys) => keys
                .iter()
                .find(|k| k.state == "active")
                .map(|k| {
                    format!(
                        "{} ({}, since {})",
                        k.kid,
                        k.alg,
                        render::cell_time(&k.activates_at)
                    )
                })
                .unwrap_or_else(|| "none".into()),
            Err(why) => format!("unknown ({why})"),
        };
        pairs.push(("active signing key", active));
        let json = json!({
            "address": self.addr,
            "serving": serving,
            "health": services.iter().map(|(n, s)| (n.to_string(), Value::from(*s))).collect::<serde_json::Map<_, _>>(),
            "jwks": published.iter().map(|(kid, alg)| json!({"kid": kid, "alg": alg})).collect::<Vec<_>>(),
            "signing_keys": match &signing {
                Ok(keys) => Value::Array(keys.iter().map(render::signing_key_json).collect()),
                Err(why) => json!({ "error": why }),
            },
        });
        let mut out = Output::new(render::fields(&pairs), json);
        if !serving {
            out.code = exit::UNAVAILABLE;
        }
        Ok(out)
    }
}
