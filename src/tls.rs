//! TLS for the gRPC and HTTP listeners (rustls on ring): the certificate reloaded when
//! its files change, optional client certificates (mTLS), and the SPIFFE id a client
//! certificate carries.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;

/// The TLS side of both public listeners: one certificate, two ALPN lists.
#[derive(Clone)]
pub(crate) struct Tls {
    /// For the gRPC listener: offers only `h2`.
    pub(crate) grpc: TlsAcceptor,
    /// For the HTTP listener: offers only `http/1.1`.
    pub(crate) http: TlsAcceptor,
}

impl Tls {
    /// TLS as `config` sets it up, or `None` when `tls_cert_file` is unset. Errors
    /// name the file that could not be used (never its contents).
    pub(crate) fn from_config(config: &Config) -> Result<Option<Tls>, String> {
        let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver = Arc::new(ReloadingCert::load(cert, key, provider.clone())?);
        let verifier = match &config.tls_client_ca_file {
            None => None,
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in read_certs(ca)? {
                    roots.add(c).map_err(|e| {
                        format!("{}: not a usable CA certificate: {e}", ca.display())
                    })?;
                }
                let v =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("{}: {e}", ca.display()))?;
                Some(v)
            }
        };
        let server_config = |alpn: &[u8]| -> Result<Arc<ServerConfig>, String> {
            let builder = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?;
            let builder = match &verifier {
                Some(v) => builder.with_client_cert_verifier(v.clone()),
                None => builder.with_no_client_auth(),
            };
            let mut c = builder.with_cert_resolver(resolver.clone());
            c.alpn_protocols = vec![alpn.to_vec()];
            // No session resumption: every connection gets the certificate on disk now
            // and has its client certificate checked now. gRPC clients hold long-lived
            // connections, so the full handshakes cost little.
            c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            c.send_tls13_tickets = 0;
            Ok(Arc::new(c))
        };
        Ok(Some(Tls {
            grpc: TlsAcceptor::from(server_config(b"h2")?),
            http: TlsAcceptor::from(server_config(b"http/1.1")?),
        }))
    }
}

/// What identifies a version of a file on disk; any change means "read it again".
/// The inode catches a replacement by rename (or a Kubernetes secret's symlink swap)
/// that keeps the size and the modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode,
    })
}

/// The server certificate, read again at the first handshake after either file
/// changed. A new pair that does not load (a half-written file, a key that does not
/// match the certificate) leaves the previous one in service and is retried once the
/// files change again; so writing the certificate and then the key never serves a
/// mismatched pair.
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The files' stamps last looked at, loaded or not.
    seen: Mutex<(Option<Stamp>, Option<Stamp>)>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn load(
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let seen = (stamp(cert_file), stamp(key_file));
        let key = load_pair(cert_file, key_file, &provider)?;
        Ok(ReloadingCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            current: ArcSwap::from_pointee(key),
            seen: Mutex::new(seen),
        })
    }

    /// Reloads if the files changed since last looked at. Two `stat`s per handshake:
    /// small next to the handshake's own cost, and the next connection after a swap
    /// gets the new certificate.
    fn refresh(&self) {
        let now = (stamp(&self.cert_file), stamp(&self.key_file));
        // A handshake that finds another one reloading serves the current pair.
        let mut seen = match self.seen.try_lock() {
            Ok(seen) => seen,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if *seen == now {
            return;
        }
        *seen = now;
        match load_pair(&self.cert_file, &self.key_file, &self.provider) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate files changed but do not load; serving the previous certificate");
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        Some(self.current.load_full())
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: cannot read PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn load_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = read_certs(cert_file)?;
    // The error names the file only: PEM errors carry no key material, but a key's
    // path is all an operator needs.
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|_| format!("{}: no usable PEM private key", key_file.display()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        format!(
            "{} / {}: the key does not fit the certificate or is unsupported: {e}",
            cert_file.display(),
            key_file.display()
        )
    })
}

/// The SPIFFE id of an X.509-SVID: its one URI SAN, if that is a valid `spiffe://`
/// id. A certificate with no URI SAN, or more than one (not an SVID), has none.
///
/// A minimal DER walk down to the SubjectAltName extension; the certificate has
/// already passed chain verification when this runs, and any malformed input yields
/// `None`, never a panic.
pub(crate) fn spiffe_id(cert: &[u8]) -> Option<String> {
    let mut uris = uri_sans(cert)?;
    if uris.len() != 1 {
        return None;
    }
    let uri = uris.pop()?;
    is_spiffe_id(&uri).then_some(uri)
}

/// Is `s` a SPIFFE id: `spiffe://` + a trust domain of `[a-z0-9._-]` + a path of
/// non-empty segments of `[A-Za-z0-9._-]`, none `.` or `..` (the SPIFFE-ID spec).
pub(crate) fn is_spiffe_id(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("spiffe://") else {
        return false;
    };
    if s.len() > 2048 {
        return false;
    }
    let (domain, path) = rest
        .split_once('/')
        .map_or((rest, None), |(d, p)| (d, Some(p)));
    let domain_ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let path_ok = path.is_none_or(|p| {
        p.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
    });
    domain_ok && path_ok
}

/// One DER element: (tag, contents, what follows). Low tag numbers and definite
/// lengths of up to 4 bytes only, which is all a certificate uses.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed value's contents, in order; stops at the first
/// malformed one.
fn elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, contents, rest) = tlv(input)?;
        input = rest;
        Some((tag, contents))
    })
}

const SEQUENCE: u8 = 0x30;
/// `extensions [3] EXPLICIT` in TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `uniformResourceIdentifier [6] IMPLICIT IA5String` in GeneralName.
const URI_NAME: u8 = 0x86;
/// 2.5.29.17, id-ce-subjectAltName.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The URI SANs of a DER certificate; `None` if it does not parse that far or has
/// more than one SubjectAltName extension (RFC 5280 §4.2 forbids that).
fn uri_sans(cert: &[u8]) -> Option<Vec<String>> {
    let (SEQUENCE, cert, _) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    // Of TBSCertificate's fields only `extensions` has tag [3] constructed.
    let Some((_, exts)) = elements(tbs).find(|(tag, _)| *tag == EXTENSIONS) else {
        return Some(Vec::new());
    };
    let (SEQUENCE, exts, _) = tlv(exts)? else {
        return None;
    };
    let mut san = None;
    for (tag, ext) in elements(exts) {
        if tag != SEQUENCE {
            return None;
        }
        let mut parts = elements(ext);
        let (OID, oid) = parts.next()? else {
            return None;
        };
        if oid != SUBJECT_ALT_NAME {
            continue;
        }
        if san.is_some() {
            return None;
        }
        let (mut tag, mut value) = parts.next()?;
        if tag == BOOLEAN {
            (tag, value) = parts.next()?;
        }
        if tag != OCTET_STRING {
            return None;
        }
        san = Some(value);
    }
    let Some(san) = san else {
        return Some(Vec::new());
    };
    let (SEQUENCE, names, rest) = tlv(san)? else {
        return None;
    };
    if !rest.is_empty() {
        return None;
    }
    let mut uris = Vec::new();
    for (tag, name) in elements(names) {
        if tag == URI_NAME {
            // IA5String: ASCII only.
            if !name.is_ascii() {
                return None;
            }
            uris.push(String::from_utf8(name.to_vec()).ok()?);
        }
    }
    Some(uris)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(s: &str) -> rcgen::SanType {
        rcgen::SanType::URI(s.try_into().unwrap())
    }

    fn dns(s: &str) -> rcgen::SanType {
        rcgen::SanType::DnsName(s.try_into().unwrap())
    }

    #[test]
    fn the_one_spiffe_uri_san_is_the_id() {
        let der = cert_with(vec![
            dns("envoy.mesh"),
            uri("spiffe://example.org/ns/mesh/sa/envoy"),
        ]);
        assert_eq!(
            spiffe_id(&der).as_deref(),
            Some("spiffe://example.org/ns/mesh/sa/envoy")
        );
    }

    #[test]
    fn certificates_that_are_not_svids_have_no_id() {
        let rows: [(&str, Vec<rcgen::SanType>); 5] = [
            ("no SAN at all", vec![]),
            ("DNS names only", vec![dns("localhost")]),
            ("an https URI", vec![uri("https://example.org/x")]),
            (
                "two URI SANs",
                vec![uri("spiffe://example.org/a"), uri("spiffe://example.org/b")],
            ),
            (
                "a malformed SPIFFE id",
                vec![uri("spiffe://Example.org/../x")],
            ),
        ];
        for (name, sans) in rows {
            assert_eq!(spiffe_id(&cert_with(sans)), None, "{name}");
        }
    }

    #[test]
    fn hostile_der_yields_nothing_and_never_panics() {
        let good = cert_with(vec![uri("spiffe://example.org/w")]);
        // Every truncation, and every single-byte corruption, of a real certificate.
        for n in 0..good.len() {
            let _ = spiffe_id(&good[..n]);
        }
        for i in 0..good.len() {
            for b in [0x00, 0x1f, 0x30, 0x80, 0x84, 0x86, 0xa3, 0xff] {
                let mut bad = good.clone();
                bad[i] = b;
                let _ = spiffe_id(&bad);
            }
        }
        let rows: [(&str, &[u8]); 6] = [
            ("empty", &[]),
            ("indefinite length", &[0x30, 0x80, 0x00, 0x00]),
            ("length past the end", &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            ("five length bytes", &[0x30, 0x85, 0, 0, 0, 0, 1, 0]),
            ("high tag number", &[0x1f, 0x81, 0x01, 0x00]),
            ("not a sequence", &[0x04, 0x00]),
        ];
        for (name, der) in rows {
            assert_eq!(spiffe_id(der), None, "{name}");
        }
    }

    #[test]
    fn spiffe_id_syntax() {
        for ok in [
            "spiffe://example.org",
            "spiffe://example.org/ns/mesh/sa/envoy",
            "spiffe://td-1.internal/a_b.c-d",
        ] {
            assert!(is_spiffe_id(ok), "{ok}");
        }
        for bad in [
            "",
            "https://example.org/x",
            "spiffe://",
            "spiffe:///path",
            "spiffe://Example.org/x",
            "spiffe://example.org/",
            "spiffe://example.org//x",
            "spiffe://example.org/./x",
            "spiffe://example.org/a/..",
            "spiffe://example.org/a b",
            "spiffe://example.org/a?q",
            "spiffe://user@example.org/a",
            "spiffe://example.org:443/a",
        ] {
            assert!(!is_spiffe_id(bad), "{bad}");
        }
    }
}
