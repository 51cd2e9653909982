//! The master key and AES-256-GCM sealing of private signing keys at rest.
//!
//! The master key comes from `TESSERA_MASTER_KEY`, from a key file (a mounted secret),
//! or — for development only — from a file created in the data dir with a loud warning.
//! Its text form is 32 bytes in base64url.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::datadir;

/// Name of the development master-key file inside the data dir.
pub(crate) const DEV_KEY_FILE: &str = "master.key";

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
    pub(crate) fn load(config: &Config) -> Result<Self> {
        if let MasterKeySource::Development(path) = MasterKeySource::of(config) {
            // Not `exists()`: it follows a symlink, and a planted one must be seen, not used.
            if std::fs::symlink_metadata(&path).is_err() {
                create_dev_key(&config.data_dir, &path)?;
            }
        }
        Self::load_existing(config)
    }

    /// Loads the configured master key, or the development one already in the data
    /// dir; never creates one. The offline tools use this: a fresh key could open
    /// nothing that is already sealed.
    pub(crate) fn load_existing(config: &Config) -> Result<Self> {
        match MasterKeySource::of(config) {
            MasterKeySource::Env => {
                let secret = config.master_key.as_ref().map(|s| s.expose());
                Self::from_text(secret.unwrap_or_default())
                    .map_err(|e| Error::InvalidArgument(format!("TESSERA_MASTER_KEY: {e}")))
            }
            MasterKeySource::File(path) => {
                // A mounted secret is typically root's; it must still be nobody else's to write.
                let text = read_key_file(&path, "master key file", true)?;
                Self::from_text(&text).map_err(|e| {
                    Error::InvalidArgument(format!("master key file {}: {e}", path.display()))
                })
            }
            MasterKeySource::Development(path) => {
                if std::fs::symlink_metadata(&path).is_err() {
                    return Err(Error::FailedPrecondition(format!(
                        "no master key is configured (TESSERA_MASTER_KEY or master_key_file) and \
                         there is no development master key at {}",
                        path.display()
                    )));
                }
                let text = read_key_file(&path, "development master key file", false)?;
                tracing::warn!(
                    path = %path.display(),
                    "NO MASTER KEY CONFIGURED: signing keys are sealed with a development key stored next to \
                     the database. Set TESSERA_MASTER_KEY or master_key_file in production."
                );
                Self::from_text(&text)
                    .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
            }
        }
    }

    /// Whether `other` is this same key: what one seals, the other opens. (The key
    /// bytes are not kept, so they cannot be compared directly.)
    pub(crate) fn same_key_as(&self, other: &MasterKey) -> Result<bool> {
        let probe = other.seal("same-key-probe", b"probe")?;
        Ok(self.open("same-key-probe", &probe).is_ok())
    }

    /// Seals `plaintext`, bound to `context` (the kid), as `nonce || ciphertext || tag`.
    pub(crate) fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
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

    /// Opens what `seal` made for the same `context`.
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

/// Where the master key comes from, in the order [`MasterKey::load`] looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MasterKeySource {
    /// `TESSERA_MASTER_KEY`.
    Env,
    /// `master_key_file`.
    File(PathBuf),
    /// Neither: the development key file in the data dir.
    Development(PathBuf),
}

impl MasterKeySource {
    /// The source `config` names.
    pub(crate) fn of(config: &Config) -> Self {
        if config.master_key.is_some() {
            MasterKeySource::Env
        } else if let Some(path) = &config.master_key_file {
            MasterKeySource::File(path.clone())
        } else {
            MasterKeySource::Development(config.data_dir.join(DEV_KEY_FILE))
        }
    }
}

impl std::fmt::Display for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterKeySource::Env => f.write_str("TESSERA_MASTER_KEY"),
            MasterKeySource::File(p) => write!(f, "master key file {}", p.display()),
            MasterKeySource::Development(p) => {
                write!(f, "development master key file {}", p.display())
            }
        }
    }
}

/// Reads a master-key file's text after checking that it can be trusted (see
/// [`datadir::check_trusted_file`]); `what` names it in errors.
pub(crate) fn read_key_file(
    path: &Path,
    what: &str,
    root_may_own: bool,
) -> Result<Zeroizing<String>> {
    datadir::check_trusted_file(path, what, root_may_own)?;
    Ok(Zeroizing::new(std::fs::read_to_string(path).map_err(
        |e| Error::internal(format!("reading {what} {}: {e}", path.display())),
    )?))
}

/// Creates the development master key at `path` (in `data_dir`), 0600.
fn create_dev_key(data_dir: &Path, path: &Path) -> Result<()> {
    let mut raw = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(raw.as_mut())
        .map_err(|_| Error::internal("OS random source"))?;
    // Write aside, then link into place: a concurrent first start either wins
    // the link or uses the winner's complete file, never a half-written one.
    let tmp = data_dir.join(format!(
        "{DEV_KEY_FILE}.{}.tmp",
        crate::tokens::opaque::public_id()
    ));
    let text = Zeroizing::new(B64.encode(raw.as_ref()));
    write_private_file(&tmp, text.as_bytes())?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::internal(format!("creating {}: {e}", path.display()))),
    }
}

/// Writes a file readable by its owner only (0600), refusing to overwrite.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
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
    fn same_key_is_told_from_another_without_the_key_bytes() {
        let other = MasterKey::from_text(&B64.encode([8u8; 32])).unwrap();
        assert!(key().same_key_as(&key()).unwrap());
        assert!(!key().same_key_as(&other).unwrap());
    }

    #[test]
    fn bad_master_keys() {
        assert!(MasterKey::from_text("short").is_err());
        assert!(MasterKey::from_text(&B64.encode([1u8; 16])).is_err());
        assert_eq!(format!("{:?}", key()), "MasterKey([redacted])");
    }
}
