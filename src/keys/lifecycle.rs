//! Key lifecycle: scheduled and on-demand rotation, the transitions as their instants
//! come, and emergency revocation. Every change is one store transaction, then a
//! reload of the in-memory set.

use jsonwebtoken::Algorithm;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use super::seal::MasterKey;
use super::set::alg_name;
use super::{Keyring, jwk};
use crate::config::SigningAlg;
use crate::error::{Error, Result};
use crate::store::audit::{self, AuditEntry};
use crate::store::changes::KeyState;
use crate::store::keys::{self as rows, KeyRow};

/// A rotation as scheduled: the successor and when it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rotation {
    /// The successor's kid.
    pub(crate) kid: String,
    /// When it signs (Unix seconds).
    pub(crate) activates_at: i64,
}

/// A freshly generated key pair: kid, public key, PKCS#8 private key.
struct Generated {
    kid: String,
    alg: Algorithm,
    public_key: Vec<u8>,
    pkcs8: Zeroizing<Vec<u8>>,
}

fn generate(alg: SigningAlg) -> Result<Generated> {
    let rng = SystemRandom::new();
    fn err<E>(_: E) -> Error {
        Error::internal("key generation failed")
    }
    match alg {
        SigningAlg::EdDSA => {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(err)?;
            let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(err)?;
            let public_key = pair.public_key().as_ref().to_vec();
            Ok(Generated {
                kid: jwk::thumbprint_ed25519(&public_key),
                alg: Algorithm::EdDSA,
                public_key,
                pkcs8: Zeroizing::new(doc.as_ref().to_vec()),
            })
        }
        SigningAlg::ES256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(err)?;
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
                    .map_err(err)?;
            let public_key = pair.public_key().as_ref().to_vec();
            Ok(Generated {
                kid: jwk::thumbprint_ec_p256(&public_key[1..33], &public_key[33..65]),
                alg: Algorithm::ES256,
                public_key,
                pkcs8: Zeroizing::new(doc.as_ref().to_vec()),
            })
        }
    }
}

/// A freshly generated key, sealed under `master`, as the row that stores it.
pub(super) fn fresh_row(
    alg: SigningAlg,
    master: &MasterKey,
    now: i64,
    activates_at: i64,
) -> Result<KeyRow> {
    let g = generate(alg)?;
    Ok(KeyRow {
        kid: g.kid.clone(),
        alg: alg_name(g.alg).unwrap_or("EdDSA").to_string(),
        public_key: g.public_key.clone(),
        sealed_private: master.seal(&g.kid, &g.pkcs8)?,
        created_at: now,
        activates_at,
        retired_at: None,
        verify_until: None,
    })
}

impl Keyring {
    /// Publishes a fresh key to sign from `activates_at` (`now` for an emergency); the
    /// key signing until then retires at that instant and verifies for the retire
    /// window. A successor already waiting is kept rather than doubled: returned as it
    /// is, or made to sign at once when `activates_at <= now`.
    pub(crate) async fn rotate(
        &self,
        now: i64,
        activates_at: i64,
        request_id: &str,
        caller: &str,
    ) -> Result<Rotation> {
        let activates_at = activates_at.max(now);
        let row = self.fresh_row(now, activates_at)?;
        let window = self.retire_window;
        let mut entry = AuditEntry {
            at: now,
            request_id: request_id.to_string(),
            caller: caller.to_string(),
            kind: "key.rotated".into(),
            ..AuditEntry::default()
        };
        let done = self
            .store
            .write(move |c| {
                let s = rows::schedule_successor(c, &row, now, window)?;
                entry.token_id = s.kid.clone();
                let entry = entry
                    .with("activates_at", s.activates_at)
                    .with(
                        "previous_verify_until",
                        s.activates_at.saturating_add(window),
                    )
                    .with("new_key", s.inserted);
                audit::append(c, &entry)?;
                Ok(s)
            })
            .await?;
        self.reload(now).await?;
        tracing::info!(kid = %done.kid, activates_at = done.activates_at, "signing key rotation scheduled");
        Ok(Rotation {
            kid: done.kid,
            activates_at: done.activates_at,
        })
    }

    /// Rotates on schedule: when no successor waits and the key signing at `now`
    /// reaches the end of its `period` within `lead`, publishes a successor to sign at
    /// that end (or `lead` from now, if housekeeping comes late). Safe to run from
    /// several processes at once: the store keeps one successor.
    pub(crate) async fn rotate_if_due(
        &self,
        now: i64,
        period: i64,
        lead: i64,
    ) -> Result<Option<Rotation>> {
        let set = self.current();
        let signer = set.signer(now);
        if set.next.as_ref().is_some_and(|n| n.activates_at > now) {
            return Ok(None);
        }
        let ends = signer.activates_at.saturating_add(period);
        if now.saturating_add(lead) < ends {
            return Ok(None);
        }
        let at = ends.max(now.saturating_add(lead));
        self.rotate(now, at, "-", "system").await.map(Some)
    }

    /// Brings the key set up to `now` if a transition is due (a successor's activation,
    /// a retired key's window ending) and logs it: cheap when nothing is due.
    pub(crate) async fn settle(&self, now: i64) -> Result<()> {
        let set = self.current();
        let due = set.next.as_ref().is_some_and(|n| now >= n.activates_at)
            || set
                .verifying
                .values()
                .any(|k| k.verify_until.is_some_and(|u| now >= u));
        if !due {
            return Ok(());
        }
        let logged = self.store.write(move |c| rows::announce(c, now)).await?;
        self.reload(now).await?;
        if logged > 0 {
            tracing::info!(kid = %self.current().active.kid, "signing key activated");
        }
        Ok(())
    }

    fn fresh_row(&self, now: i64, activates_at: i64) -> Result<KeyRow> {
        fresh_row(self.alg, &self.master, now, activates_at)
    }

    /// Emergency revocation of `kid`: it stops verifying at once and leaves the JWKS.
    /// If it was the signing key, a fresh key is stored in the same transaction, so
    /// there is never a moment without one. Revoking a revoked key changes nothing.
    /// Returns the kid that signs from now on, or `None` if `kid` is unknown.
    pub(crate) async fn revoke(
        &self,
        kid: &str,
        now: i64,
        entry: AuditEntry,
    ) -> Result<Option<String>> {
        // Generated up front, outside the writer; stored only if `kid` turns out to
        // be the signing key when the write runs and no published successor waits to
        // take over (one that does is already in every cached JWKS, so it goes first).
        let successor = self.fresh_row(now, now)?;
        let window = self.retire_window;
        let target = kid.to_string();
        let found = self
            .store
            .write(move |c| {
                let Some(state) = rows::state(c, &target, now)? else {
                    return Ok(false);
                };
                let mut entry = entry.with("state", state.as_str());
                match state {
                    KeyState::Revoked => return Ok(true),
                    KeyState::Active => {
                        let s = rows::schedule_successor(c, &successor, now, window)?;
                        entry = entry.with("successor", s.kid);
                    }
                    // The key signing now keeps signing: its hand-over is called off.
                    KeyState::Published => rows::unschedule(c, now)?,
                    KeyState::Retired => {}
                }
                rows::revoke(c, &target, now)?;
                rows::announce(c, now)?;
                audit::append(c, &entry)?;
                Ok(true)
            })
            .await?;
        if !found {
            return Ok(None);
        }
        self.reload(now).await?;
        let active = self.current().signer(now).kid.clone();
        tracing::warn!(%kid, %active, "signing key revoked");
        Ok(Some(active))
    }
}
