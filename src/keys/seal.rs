//! The master key and AES-256-GCM sealing of private signing keys at rest.
//!
//! The master key comes from `TESSERA_MASTER_KEY`, from a key file (a mounted secret),
//! or — for development only — from a file created in the data dir with a loud warning.
//! Its text form is 32 bytes in base64url.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::datadir;

/// Name of the development master-key file inside the data dir.
pub const DEV_KEY_FILE: &str = "master.key";

/// The key that seals signing keys. Never printed.
pub struct MasterKey(LessSafeKey);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Builds a master key from its base64url text.
    pub fn from_text(text: &str) -> Result<Self> {
        let raw = Zeroizing::new(
            B64.decode(text.trim())
                .map_err(|_| Error::InvalidArgument("master key is not base64url".into()))?,
        );
        if raw.len() != 32 {
            return Err(Error::InvalidArgument("master key must be 32 bytes".into()));
        }
        let key =
            UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| Error::internal("AES key setup"))?;
        Ok(MasterKey(LessSafeKey::new(key)))
    }

    /// Loads the configured master key, creating a development one if none is configured.
    pub fn load(config: &Config) -> Result<Self> {
        if let Some(secret) = &config.master_key {
            return Self::from_text(&secret.0)
                .map_err(|e| Error::InvalidArgument(format!("TESSERA_MASTER_KEY: {e}")));
        }
        if let Some(path) = &config.master_key_file {
            // A mounted secret is typically root's; it must still be nobody else's to write.
            datadir::check_trusted_file(path, "master key file", true)?;
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                Error::internal(format!("reading master key file {}: {e}", path.display()))
            })?);
            return Self::from_text(&text).map_err(|e| {
                Error::InvalidArgument(format!("master key file {}: {e}", path.display()))
            });
        }
        let path = config.data_dir.join(DEV_KEY_FILE);
        // Not `exists()`: it follows a symlink, and a planted one must be seen, not used.
        if std::fs::symlink_metadata(&path).is_err() {
            let mut raw = Zeroizing::new([0u8; 32]);
            SystemRandom::new()
                .fill(raw.as_mut())
                .map_err(|_| Error::internal("OS random source"))?;
            // Write aside, then link into place: a concurrent first start either wins
            // the link or uses the winner's complete file, never a half-written one.
            let tmp = config.data_dir.join(format!(
                "{DEV_KEY_FILE}.{}.tmp",
                crate::tokens::opaque::public_id()
            ));
            write_private_file(&tmp, B64.encode(raw.as_ref()).as_bytes())?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::internal(format!("creating {}: {e}", path.display()))),
            }
        }
        datadir::check_trusted_file(&path, "development master key file", false)?;
        tracing::warn!(
            path = %path.display(),
            "NO MASTER KEY CONFIGURED: signing keys are sealed with a development key stored next to \
             the database. Set TESSERA_MASTER_KEY or master_key_file in production."
        );
        let text = Zeroizing::new(
            std::fs::read_to_string(&path)
                .map_err(|e| Error::internal(format!("reading {}: {e}", path.display())))?,
        );
        Self::from_text(&text)
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
    }

    /// Seals `plaintext`, bound to `context` (the kid), as `nonce || ciphertext || tag`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::internal("OS random source"))?;
        let mut buf = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| Error::internal("seal"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens what [`seal`](Self::seal) made for the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN {
            return Err(Error::internal("sealed key too short"));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::internal("nonce"))?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .0
            .open_in_place(nonce, Aad::from(context.as_bytes()), buf.as_mut())
            .map_err(|_| {
                Error::internal(format!(
                    "signing key {context} does not open under the configured master key \
                     (is it the master key this database was created with?)"
                ))
            })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// Writes a file readable by its owner only (0600), refusing to overwrite.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::internal(format!("creating {}: {e}", path.display())))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(Error::internal)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_text(&B64.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn seal_open_round_trip_bound_to_context() {
        let k = key();
        let sealed = k.seal("kid-1", b"private").unwrap();
        assert!(
            !sealed.windows(7).any(|w| w == b"private"),
            "plaintext visible"
        );
        assert_eq!(&k.open("kid-1", &sealed).unwrap()[..], b"private");
        assert!(k.open("kid-2", &sealed).is_err(), "context not bound");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(k.open("kid-1", &tampered).is_err());
        let other = MasterKey::from_text(&B64.encode([8u8; 32])).unwrap();
        assert!(other.open("kid-1", &sealed).is_err());
    }

    #[test]
    fn bad_master_keys() {
        assert!(MasterKey::from_text("short").is_err());
        assert!(MasterKey::from_text(&B64.encode([1u8; 16])).is_err());
        assert_eq!(format!("{:?}", key()), "MasterKey([redacted])");
    }
}
