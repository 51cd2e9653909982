//! OAuth clients: registration, secret rotation, and authentication of a client by
//! its secret (an API key).

use crate::apikeys::NewApiKey;
use crate::auth::{self, Caller, Principal};
use crate::authority::{Authority, Issued, audit_entry};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::oauth::rules;
use crate::store::apikeys as apikey_rows;
use crate::store::audit;
use crate::store::clients::{self, ClientRow};
use crate::tokens::{SERVICE_SCOPE_PREFIX, check_field, normalize_scopes, opaque};

/// Environment label of the API keys that serve as confidential clients' secrets.
pub(crate) const CLIENT_KEY_ENVIRONMENT: &str = "oauth";

/// Which client each rotated-in client secret belongs to. A confidential client's first
/// secret is the API key whose id is the client id; after `rotate_secret_of`, its
/// secret is a new API key with an id of its own, mapped back to the client here so
/// the client id stays stable. Loaded from `client_secrets` at start, updated on every
/// rotation; a key that is not here is its own client.
#[derive(Debug, Default)]
pub(crate) struct ClientKeys(std::sync::RwLock<std::collections::HashMap<String, String>>);

impl ClientKeys {
    /// Maps `key_id` to `client_id`.
    pub(crate) fn insert(&self, key_id: String, client_id: String) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key_id, client_id);
    }

    /// The client an API key authenticates as: its client for a rotated-in secret,
    /// else the key's own id.
    pub(crate) fn client_of(&self, key_id: &str) -> String {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key_id)
            .cloned()
            .unwrap_or_else(|| key_id.to_string())
    }
}

/// An OAuth client to register (`Issue(client)`).
#[derive(Debug, Clone, Default)]
pub struct ClientRegistration {
    /// Human label; the owner of a confidential client's API key.
    pub name: String,
    /// A public client has no secret (SPAs, native apps); a confidential one gets an
    /// API key as its secret.
    pub public: bool,
    /// Redirect URIs: `https`, or `http` on a loopback IP literal. Matched exactly.
    pub redirect_uris: Vec<String>,
    /// The most an authorization code for this client may carry (no `tessera:*`).
    pub scopes: Vec<String>,
}

impl Authority {
    /// Checks client credentials sent to the HTTP token endpoint (`client_secret_basic`
    /// or `client_secret_post`): the secret is the client's API key and `client_id`
    /// its id. The principal goes into the [`Caller`] handed to the grant methods.
    pub fn authenticate_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<std::sync::Arc<Principal>> {
        let c = self
            .callers
            .check(secret, self.clock.now())
            .filter(|c| self.client_keys.client_of(&c.row.id) == client_id)
            .ok_or(Error::Unauthenticated("client authentication failed"))?;
        Ok(c.principal.clone())
    }

    /// Registers an OAuth client (admin only). A confidential client also gets an API
    /// key (owner = the client's name, environment `oauth`, the client's scopes): its id
    /// is the `client_id`, its text the client secret, returned once in `token`.
    pub async fn register_client(
        &self,
        caller: &Caller,
        reg: ClientRegistration,
    ) -> Result<Issued> {
        caller.require(auth::SCOPE_ADMIN)?;
        check_field("name", &reg.name, true)?;
        if reg.redirect_uris.is_empty() || reg.redirect_uris.len() > rules::MAX_REDIRECT_URIS {
            return Err(Error::InvalidArgument(format!(
                "redirect_uris: between 1 and {} entries",
                rules::MAX_REDIRECT_URIS
            )));
        }
        let mut redirect_uris: Vec<String> = Vec::with_capacity(reg.redirect_uris.len());
        for u in reg.redirect_uris {
            rules::check_redirect_registration(&u)?;
            if !redirect_uris.contains(&u) {
                redirect_uris.push(u);
            }
        }
        let scopes = normalize_scopes(&reg.scopes)?;
        if scopes.iter().any(|s| s.starts_with(SERVICE_SCOPE_PREFIX)) {
            return Err(Error::InvalidArgument(
                "tessera:* scopes cannot be given to an OAuth client".into(),
            ));
        }
        let now = self.clock.now();
        // A confidential client's secret is an API key like any other, whose id is
        // the client id; a public client has an id and nothing to authenticate with.
        let (id, key_row, secret) = if reg.public {
            (opaque::public_id(), None, None)
        } else {
            let (row, key) = self.new_api_key(
                NewApiKey {
                    owner: reg.name.clone(),
                    name: "oauth-client".into(),
                    environment: CLIENT_KEY_ENVIRONMENT.into(),
                    scopes: scopes.clone(),
                    ..NewApiKey::default()
                },
                now,
            )?;
            (row.id.clone(), Some(row), Some(key))
        };
        let client = ClientRow {
            id: id.clone(),
            name: reg.name,
            public: reg.public,
            redirect_uris,
            scopes: scopes.clone(),
            created_at: now,
        };
        let entry = audit_entry(caller, now, "client.registered", &id)
            .with("name", client.name.clone())
            .with("public", client.public)
            .with("scopes", scopes.clone())
            .with("redirect_uris", client.redirect_uris.clone());
        let stored_key = key_row.clone();
        self.store
            .write(move |c| {
                if let Some(k) = &stored_key {
                    apikey_rows::insert(c, k)?;
                }
                clients::insert(c, &client)?;
                if let Some(k) = &stored_key {
                    clients::add_secret(c, &k.id, &client.id)?;
                }
                audit::append(c, &entry)
            })
            .await?;
        let expires_at = key_row.as_ref().map_or(0, |k| k.expires_at);
        if let Some(k) = key_row {
            self.callers.insert(k);
        }
        Metrics::inc(&self.metrics.issued);
        tracing::info!(client_id = %id, public = reg.public, "OAuth client registered");
        Ok(Issued {
            token: secret.unwrap_or_default(),
            token_id: id,
            token_type: "client",
            expires_at,
            scopes,
            ..Issued::default()
        })
    }

    /// Rotates a confidential client's secret (admin only; `Issue(client)` with
    /// `rotate_secret_of`): a new API key with the current secret's owner, name,
    /// environment and scopes becomes the client's secret, for the same client id;
    /// the old secret works for `overlap` (as [`Authority::rotate_api_key`]), then
    /// dies. `NOT_FOUND` for an unknown client, `FAILED_PRECONDITION` for a public
    /// one or when the current secret is revoked or expired (register a new client).
    pub(crate) async fn rotate_client_secret(
        &self,
        caller: &Caller,
        client_id: &str,
        overlap: Option<i64>,
    ) -> Result<Issued> {
        caller.require(auth::SCOPE_ADMIN)?;
        check_field("rotate_secret_of", client_id, true)?;
        let id = client_id.to_string();
        let (client, current) = self
            .store
            .read(move |c| Ok((clients::find(c, &id)?, clients::current_secret(c, &id)?)))
            .await?;
        let client = client
            .ok_or_else(|| Error::NotFound(format!("no OAuth client with id {client_id:?}")))?;
        if client.public {
            return Err(Error::FailedPrecondition(format!(
                "OAuth client {client_id} is public: it has no secret to rotate"
            )));
        }
        let current = current.unwrap_or_else(|| client.id.clone());
        let issued = self
            .rotate_key(
                caller,
                &current,
                overlap,
                NewApiKey::default(),
                Some(client.id.clone()),
            )
            .await?;
        tracing::info!(client_id = %client.id, key_id = %issued.token_id, "client secret rotated");
        Ok(Issued {
            token_id: client.id,
            token_type: "client",
            ..issued
        })
    }
}
