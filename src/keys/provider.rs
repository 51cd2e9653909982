//! A `jsonwebtoken` [`CryptoProvider`] backed by *ring*.
//!
//! jsonwebtoken 11 only ships aws-lc-rs and RustCrypto back ends; Tessera already
//! links *ring* (tonic/rustls), so routing JWT signatures through it keeps one
//! audited crypto library in the binary.
//!
//! It knows only the algorithms Tessera signs or verifies with: EdDSA and ES256
//! (generated keys) and RS256/PS256 (imported keys, see `super::import`). Every
//! other algorithm is refused for signing and verifying alike: code that is never
//! used is never reviewed, and a `Validation` that lists some other algorithm by
//! mistake then fails closed. HS256/384/512 get their own refusal, so a JWKS public
//! key can never be used as an HMAC secret (the classic `alg: HS256` key-confusion
//! attack).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result, new_error};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::digest;
use ring::rand::SystemRandom;
use ring::signature as sig;

/// The *ring*-backed provider; install it with [`install`] before any JWT work.
pub(crate) static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: key_utils::rsa_components_from_private_key,
        rsa_pub_components_from_public_key: key_utils::rsa_components_from_public_key,
        ec_pub_components_from_private_key: key_utils::ec_components_from_private_key,
        ed_pub_components_from_private_key: key_utils::ed_public_from_private_key,
        compute_digest: key_utils::compute_digest,
    },
};

/// Error text for refused HMAC algorithms. [`install`] also uses it to recognise
/// this provider, so it must stay unique to it.
const HMAC_REFUSED: &str = "tessera ring provider: HMAC algorithms (HS256/HS384/HS512) are \
                            refused; this service signs and verifies with asymmetric keys only";

/// Installs `RING_PROVIDER` as the process-wide jsonwebtoken provider.
///
/// Idempotent and safe to race (tests call it from many threads).
///
/// # Panics
///
/// If a *different* provider is already installed: tokens would then be signed
/// and verified by code other than this module, silently bypassing its
/// HMAC refusal and algorithm/key-family checks.
pub fn install() {
    if RING_PROVIDER.install_default().is_ok() {
        return;
    }
    // `install_default` hands back *our* reference on failure, not the one in
    // place, so the only way to learn who is installed is to ask it. Only this
    // provider refuses HMAC with `HMAC_REFUSED`.
    let probe = std::panic::catch_unwind(|| {
        jsonwebtoken::crypto::sign(
            b"tessera-provider-probe",
            &EncodingKey::from_secret(b"tessera-provider-probe"),
            Algorithm::HS256,
        )
    });
    let ours = matches!(
        &probe,
        Ok(Err(e)) if matches!(e.kind(), ErrorKind::Provider(msg) if msg == HMAC_REFUSED)
    );
    if !ours {
        panic!(
            "tessera: a different jsonwebtoken CryptoProvider was installed before \
             keys::provider::install(); JWT signatures would not go through ring. \
             Call keys::provider::install() first thing in main (and in every test)."
        );
    }
}

fn hmac_refused() -> Error {
    new_error(ErrorKind::Provider(HMAC_REFUSED.to_owned()))
}

/// What a key must be to serve an algorithm. RS256 and PS256 share the RSA class
/// (one key pair, two paddings), which is what lets one parsed key pair serve both
/// from the cache.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KeyClass {
    Ed25519,
    EcP256,
    Rsa,
}

impl KeyClass {
    fn of(alg: Algorithm) -> Result<Self> {
        match alg {
            Algorithm::EdDSA => Ok(Self::Ed25519),
            Algorithm::ES256 => Ok(Self::EcP256),
            Algorithm::RS256 | Algorithm::PS256 => Ok(Self::Rsa),
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Err(hmac_refused()),
            // ES384, RS384/512, PS384/512, and whatever the non-exhaustive
            // `Algorithm` grows: Tessera neither issues nor accepts them.
            _ => Err(new_error(ErrorKind::UnsupportedAlgorithm)),
        }
    }

    fn family(self) -> AlgorithmFamily {
        match self {
            Self::Ed25519 => AlgorithmFamily::Ed,
            Self::EcP256 => AlgorithmFamily::Ec,
            Self::Rsa => AlgorithmFamily::Rsa,
        }
    }

    fn invalid_key(self) -> Error {
        new_error(match self {
            Self::Ed25519 => ErrorKind::InvalidEddsaKey,
            Self::EcP256 => ErrorKind::InvalidEcdsaKey,
            Self::Rsa => ErrorKind::InvalidRsaKey("not a usable RSA key".to_owned()),
        })
    }
}

/// A parsed private key. Deliberately not `Debug`: it holds secret material.
enum ParsedSigner {
    Ed25519(sig::Ed25519KeyPair),
    EcP256(sig::EcdsaKeyPair),
    Rsa(sig::RsaKeyPair),
}

impl ParsedSigner {
    fn class(&self) -> KeyClass {
        match self {
            Self::Ed25519(_) => KeyClass::Ed25519,
            Self::EcP256(_) => KeyClass::EcP256,
            Self::Rsa(_) => KeyClass::Rsa,
        }
    }

    fn parse(class: KeyClass, der: &[u8]) -> Result<Self> {
        let parsed = match class {
            // v1 (seed only, as OpenSSL writes) and v2 (seed + public key, as
            // ring generates; ring then checks the two agree) are both accepted.
            KeyClass::Ed25519 => sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .ok()
                .map(Self::Ed25519),
            KeyClass::EcP256 => parse_p256(der).ok().map(Self::EcP256),
            KeyClass::Rsa => parse_rsa(der).ok().map(Self::Rsa),
        };
        parsed.ok_or_else(|| class.invalid_key())
    }
}

fn parse_p256(der: &[u8]) -> std::result::Result<sig::EcdsaKeyPair, ring::error::KeyRejected> {
    sig::EcdsaKeyPair::from_pkcs8(
        &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        der,
        &SystemRandom::new(),
    )
}

fn parse_rsa(der: &[u8]) -> std::result::Result<sig::RsaKeyPair, ring::error::KeyRejected> {
    // PKCS#8 is what key tooling writes today; PKCS#1 ("BEGIN RSA PRIVATE KEY")
    // is what older deployments and jsonwebtoken's own PEM loader hand over.
    sig::RsaKeyPair::from_pkcs8(der).or_else(|_| sig::RsaKeyPair::from_der(der))
}

/// SHA-256 of the key bytes: the cache must be able to find a key without
/// keeping a copy of the secret in a second place.
type CacheKey = [u8; 32];
type SignerMap = HashMap<CacheKey, Arc<ParsedSigner>>;

/// Hostile or test use (many distinct keys) must not grow the cache without
/// bound; a real deployment holds a handful of active keys.
const MAX_CACHED_SIGNERS: usize = 64;

/// jsonwebtoken calls the signer factory on every `encode`, and parsing PKCS#8
/// (RSA especially) costs about as much as signing. `ArcSwap` keeps the hot
/// path (a hit) lock-free.
static SIGNERS: LazyLock<ArcSwap<SignerMap>> =
    LazyLock::new(|| ArcSwap::from_pointee(HashMap::new()));

fn cache_key(key_bytes: &[u8]) -> CacheKey {
    let d = digest::digest(&digest::SHA256, key_bytes);
    let mut out = [0u8; 32];
    for (o, i) in out.iter_mut().zip(d.as_ref()) {
        *o = *i;
    }
    out
}

/// The map after inserting `value`. When full it starts over rather than
/// evicting selectively: misses only cost a re-parse, and this keeps the
/// copy-on-write update trivial.
fn with_entry<V: Clone>(
    map: &HashMap<CacheKey, V>,
    key: CacheKey,
    value: V,
    cap: usize,
) -> HashMap<CacheKey, V> {
    let mut next = if map.len() >= cap && !map.contains_key(&key) {
        HashMap::new()
    } else {
        map.clone()
    };
    next.insert(key, value);
    next
}

fn cached_or_parse(class: KeyClass, key_bytes: &[u8]) -> Result<Arc<ParsedSigner>> {
    let key = cache_key(key_bytes);
    if let Some(hit) = SIGNERS.load().get(&key) {
        // The same bytes handed over as another family's key (an Ed25519 PKCS#8 as
        // an EC key, say): a fresh parse would fail, so the hit must fail too.
        return if hit.class() == class {
            Ok(Arc::clone(hit))
        } else {
            Err(class.invalid_key())
        };
    }
    let parsed = Arc::new(ParsedSigner::parse(class, key_bytes)?);
    #[cfg(test)]
    test_counters::note_parse(&key);
    SIGNERS.rcu(|map| with_entry(map, key, Arc::clone(&parsed), MAX_CACHED_SIGNERS));
    Ok(parsed)
}

/// Parses `key_bytes` for `alg` into the signing-key cache ahead of the first
/// token, so a malformed key fails at startup/rotation rather than mid-request.
pub(crate) fn warm(alg: Algorithm, key_bytes: &[u8]) -> Result<()> {
    cached_or_parse(KeyClass::of(alg)?, key_bytes).map(|_| ())
}

/// Drops the cached parse of `key_bytes` (call when a key is retired so its
/// private key does not outlive it in memory).
pub(crate) fn forget(key_bytes: &[u8]) {
    let key = cache_key(key_bytes);
    SIGNERS.rcu(|map| {
        if map.contains_key(&key) {
            let mut next = SignerMap::clone(map);
            next.remove(&key);
            Arc::new(next)
        } else {
            Arc::clone(map)
        }
    });
}

/// Is a parse of `key_bytes` cached?
#[cfg(test)]
pub(crate) fn is_cached(key_bytes: &[u8]) -> bool {
    SIGNERS.load().contains_key(&cache_key(key_bytes))
}

/// Number of parsed signing keys currently cached.
#[cfg(test)]
pub(crate) fn cached_signers() -> usize {
    SIGNERS.load().len()
}

fn rsa_padding(alg: Algorithm) -> Option<&'static dyn sig::RsaEncoding> {
    match alg {
        Algorithm::RS256 => Some(&sig::RSA_PKCS1_SHA256),
        Algorithm::PS256 => Some(&sig::RSA_PSS_SHA256),
        _ => None,
    }
}

/// Moduli under 2048 bits are refused (RFC 7518 §3.3), as [`super::import`] does.
fn rsa_verification(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    match alg {
        Algorithm::RS256 => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::PS256 => Some(&sig::RSA_PSS_2048_8192_SHA256),
        _ => None,
    }
}

struct RingSigner {
    alg: Algorithm,
    key: Arc<ParsedSigner>,
}

impl signature::Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        match &*self.key {
            ParsedSigner::Ed25519(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
            // ECDSA needs a fresh nonce per signature; `_FIXED` yields JOSE's r‖s.
            ParsedSigner::EcP256(pair) => pair
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            ParsedSigner::Rsa(pair) => {
                let padding = rsa_padding(self.alg).ok_or_else(signature::Error::new)?;
                let mut out = vec![0u8; pair.public().modulus_len()];
                // The RNG only matters for PSS salts; PKCS#1 v1.5 ignores it.
                pair.sign(padding, &SystemRandom::new(), msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let class = KeyClass::of(*alg)?;
    if key.family() != class.family() {
        return Err(new_error(ErrorKind::InvalidKeyFormat));
    }
    let parsed = cached_or_parse(class, key.as_bytes())?;
    Ok(Box::new(RingSigner {
        alg: *alg,
        key: parsed,
    }))
}

/// Public key material in the form ring verifies with, borrowed from the
/// [`DecodingKey`] (`Vec<u8>` when a boxed [`RingVerifier`] owns it).
enum PublicMaterial<K> {
    /// Raw public key in the encoding `scheme` expects: 32-byte Ed25519 key,
    /// uncompressed SEC1 point, or PKCS#1 `RSAPublicKey` DER.
    Encoded {
        scheme: &'static dyn sig::VerificationAlgorithm,
        key: K,
    },
    RsaComponents {
        params: &'static sig::RsaParameters,
        n: K,
        e: K,
    },
}

impl<K: AsRef<[u8]>> PublicMaterial<K> {
    fn verify(&self, msg: &[u8], signature: &[u8]) -> std::result::Result<(), signature::Error> {
        let outcome = match self {
            PublicMaterial::Encoded { scheme, key } => {
                sig::UnparsedPublicKey::new(*scheme, key).verify(msg, signature)
            }
            PublicMaterial::RsaComponents { params, n, e } => sig::RsaPublicKeyComponents {
                n: n.as_ref(),
                e: e.as_ref(),
            }
            .verify(params, msg, signature),
        };
        outcome.map_err(|_| signature::Error::new())
    }

    fn to_owned(&self) -> PublicMaterial<Vec<u8>> {
        match self {
            PublicMaterial::Encoded { scheme, key } => PublicMaterial::Encoded {
                scheme: *scheme,
                key: key.as_ref().to_vec(),
            },
            PublicMaterial::RsaComponents { params, n, e } => PublicMaterial::RsaComponents {
                params,
                n: n.as_ref().to_vec(),
                e: e.as_ref().to_vec(),
            },
        }
    }
}

struct RingVerifier {
    alg: Algorithm,
    material: PublicMaterial<Vec<u8>>,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        self.material.verify(msg, signature)
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn encoded_bytes(key: &DecodingKey) -> Result<&[u8]> {
    match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => Ok(bytes),
        DecodingKeyKind::RsaModulusExponent { .. } => Err(new_error(ErrorKind::InvalidKeyFormat)),
    }
}

/// An uncompressed SEC1 P-256 point, checked up front so a wrong-curve key is a
/// key error rather than a silent "bad signature".
fn p256_point(key: &DecodingKey) -> Result<&[u8]> {
    let bytes = encoded_bytes(key)?;
    if bytes.len() != 65 || bytes.first() != Some(&0x04) {
        return Err(new_error(ErrorKind::InvalidEcdsaKey));
    }
    Ok(bytes)
}

/// What `key` verifies `alg` signatures with, after every check on the pair.
fn material(alg: Algorithm, key: &DecodingKey) -> Result<PublicMaterial<&[u8]>> {
    let class = KeyClass::of(alg)?;
    if key.family() != class.family() {
        return Err(new_error(ErrorKind::InvalidKeyFormat));
    }
    Ok(match class {
        KeyClass::Ed25519 => {
            let bytes = encoded_bytes(key)?;
            if bytes.len() != sig::ED25519_PUBLIC_KEY_LEN {
                return Err(new_error(ErrorKind::InvalidEddsaKey));
            }
            PublicMaterial::Encoded {
                scheme: &sig::ED25519,
                key: bytes,
            }
        }
        // `_FIXED`, not `_ASN1`: JWS (RFC 7518 §3.4) carries r‖s, and accepting
        // DER too would give every signature a second valid encoding.
        KeyClass::EcP256 => PublicMaterial::Encoded {
            scheme: &sig::ECDSA_P256_SHA256_FIXED,
            key: p256_point(key)?,
        },
        KeyClass::Rsa => {
            let params =
                rsa_verification(alg).ok_or_else(|| new_error(ErrorKind::InvalidAlgorithm))?;
            match key.kind() {
                DecodingKeyKind::SecretOrDer(der) => PublicMaterial::Encoded {
                    scheme: params,
                    key: der.as_slice(),
                },
                DecodingKeyKind::RsaModulusExponent { n, e } => PublicMaterial::RsaComponents {
                    params,
                    n: n.as_slice(),
                    e: e.as_slice(),
                },
            }
        }
    })
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    Ok(Box::new(RingVerifier {
        alg: *alg,
        material: material(*alg, key)?.to_owned(),
    }))
}

/// Longest signature any key here can make: RSA-8192 (ring's upper bound).
const MAX_SIGNATURE_LEN: usize = 8192 / 8;

/// `jsonwebtoken::crypto::verify` through this provider, with the same checks on
/// the algorithm and key, but without boxing a verifier, copying the key or
/// allocating the decoded signature: the per-token path of the strict verifier.
/// True only if `signature` (base64url, no padding) verifies over `message`.
pub(crate) fn verify_jws(
    signature: &str,
    message: &[u8],
    key: &DecodingKey,
    alg: Algorithm,
) -> bool {
    let Ok(material) = material(alg, key) else {
        return false;
    };
    let mut decoded = [0u8; MAX_SIGNATURE_LEN];
    // Too long for the buffer is too long for any key: refused like a bad encoding.
    let Ok(len) = URL_SAFE_NO_PAD.decode_slice(signature, &mut decoded) else {
        return false;
    };
    material.verify(message, &decoded[..len]).is_ok()
}

mod key_utils;

#[cfg(test)]
mod test_counters {
    use super::CacheKey;
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};

    // Per key rather than global, so tests running in parallel do not see
    // each other's parses.
    static PARSES: LazyLock<Mutex<HashMap<CacheKey, usize>>> = LazyLock::new(Default::default);

    pub(super) fn note_parse(key: &CacheKey) {
        if let Ok(mut m) = PARSES.lock() {
            *m.entry(*key).or_default() += 1;
        }
    }

    pub(super) fn parses(key_bytes: &[u8]) -> usize {
        let key = super::cache_key(key_bytes);
        PARSES
            .lock()
            .map(|m| m.get(&key).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
