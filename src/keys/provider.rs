//! A `jsonwebtoken` [`CryptoProvider`] backed by *ring*.
//!
//! jsonwebtoken 11 only ships aws-lc-rs and RustCrypto back ends; Tessera already
//! links *ring* (tonic/rustls), so routing JWT signatures through it keeps one
//! audited crypto library in the binary.
//!
//! The provider is asymmetric-only: HS256/384/512 are refused both for signing
//! and verifying. A JWKS public key can then never be used as an HMAC secret
//! (the classic `alg: HS256` key-confusion attack), even if some caller builds
//! a `Validation` that lists an HMAC algorithm by mistake.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result, new_error};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _};

/// The *ring*-backed provider; install it with [`install`] before any JWT work.
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_public_from_private_key,
        compute_digest,
    },
};

/// Error text for refused HMAC algorithms. [`install`] also uses it to recognise
/// this provider, so it must stay unique to it.
const HMAC_REFUSED: &str = "tessera ring provider: HMAC algorithms (HS256/HS384/HS512) are \
                            refused; this service signs and verifies with asymmetric keys only";

/// Installs [`RING_PROVIDER`] as the process-wide jsonwebtoken provider.
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

/// What a key must be to serve an algorithm. Several algorithms share a class
/// (all RS*/PS* use one RSA key pair), which is what lets one parsed key pair
/// serve them all from the cache.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KeyClass {
    Ed25519,
    EcP256,
    EcP384,
    Rsa,
}

impl KeyClass {
    fn of(alg: Algorithm) -> Result<Self> {
        match alg {
            Algorithm::EdDSA => Ok(Self::Ed25519),
            Algorithm::ES256 => Ok(Self::EcP256),
            Algorithm::ES384 => Ok(Self::EcP384),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Ok(Self::Rsa),
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Err(hmac_refused()),
            // `Algorithm` is non-exhaustive: anything new is unsupported until reviewed.
            _ => Err(new_error(ErrorKind::UnsupportedAlgorithm)),
        }
    }

    fn family(self) -> AlgorithmFamily {
        match self {
            Self::Ed25519 => AlgorithmFamily::Ed,
            Self::EcP256 | Self::EcP384 => AlgorithmFamily::Ec,
            Self::Rsa => AlgorithmFamily::Rsa,
        }
    }

    fn invalid_key(self) -> Error {
        new_error(match self {
            Self::Ed25519 => ErrorKind::InvalidEddsaKey,
            Self::EcP256 | Self::EcP384 => ErrorKind::InvalidEcdsaKey,
            Self::Rsa => ErrorKind::InvalidRsaKey("not a usable RSA key".to_owned()),
        })
    }
}

/// A parsed private key. Deliberately not `Debug`: it holds secret material.
enum ParsedSigner {
    Ed25519(sig::Ed25519KeyPair),
    EcP256(sig::EcdsaKeyPair),
    EcP384(sig::EcdsaKeyPair),
    Rsa(sig::RsaKeyPair),
}

impl ParsedSigner {
    fn class(&self) -> KeyClass {
        match self {
            Self::Ed25519(_) => KeyClass::Ed25519,
            Self::EcP256(_) => KeyClass::EcP256,
            Self::EcP384(_) => KeyClass::EcP384,
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
            KeyClass::EcP256 => parse_ecdsa(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                .ok()
                .map(Self::EcP256),
            KeyClass::EcP384 => parse_ecdsa(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, der)
                .ok()
                .map(Self::EcP384),
            KeyClass::Rsa => parse_rsa(der).ok().map(Self::Rsa),
        };
        parsed.ok_or_else(|| class.invalid_key())
    }
}

fn parse_ecdsa(
    alg: &'static sig::EcdsaSigningAlgorithm,
    der: &[u8],
) -> std::result::Result<sig::EcdsaKeyPair, ring::error::KeyRejected> {
    sig::EcdsaKeyPair::from_pkcs8(alg, der, &SystemRandom::new())
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
        // Same bytes asked for under another class (e.g. a P-256 key for ES384):
        // a fresh parse would fail too, so fail the same way.
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
pub fn warm(alg: Algorithm, key_bytes: &[u8]) -> Result<()> {
    cached_or_parse(KeyClass::of(alg)?, key_bytes).map(|_| ())
}

/// Drops the cached parse of `key_bytes` (call when a key is retired so its
/// private key does not outlive it in memory).
pub fn forget(key_bytes: &[u8]) {
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
pub fn is_cached(key_bytes: &[u8]) -> bool {
    SIGNERS.load().contains_key(&cache_key(key_bytes))
}

/// Number of parsed signing keys currently cached.
pub fn cached_signers() -> usize {
    SIGNERS.load().len()
}

fn rsa_padding(alg: Algorithm) -> Option<&'static dyn sig::RsaEncoding> {
    match alg {
        Algorithm::RS256 => Some(&sig::RSA_PKCS1_SHA256),
        Algorithm::RS384 => Some(&sig::RSA_PKCS1_SHA384),
        Algorithm::RS512 => Some(&sig::RSA_PKCS1_SHA512),
        Algorithm::PS256 => Some(&sig::RSA_PSS_SHA256),
        Algorithm::PS384 => Some(&sig::RSA_PSS_SHA384),
        Algorithm::PS512 => Some(&sig::RSA_PSS_SHA512),
        _ => None,
    }
}

fn rsa_verification(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    match alg {
        Algorithm::RS256 => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Some(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Some(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Some(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Some(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Some(&sig::RSA_PSS_2048_8192_SHA512),
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
            ParsedSigner::EcP256(pair) | ParsedSigner::EcP384(pair) => pair
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

enum PublicMaterial {
    /// Raw public key in the encoding `scheme` expects: 32-byte Ed25519 key,
    /// uncompressed SEC1 point, or PKCS#1 `RSAPublicKey` DER.
    Encoded {
        scheme: &'static dyn sig::VerificationAlgorithm,
        key: Vec<u8>,
    },
    RsaComponents {
        params: &'static sig::RsaParameters,
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

struct RingVerifier {
    alg: Algorithm,
    material: PublicMaterial,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let outcome = match &self.material {
            PublicMaterial::Encoded { scheme, key } => {
                sig::UnparsedPublicKey::new(*scheme, key).verify(msg, signature)
            }
            PublicMaterial::RsaComponents { params, n, e } => {
                sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
            }
        };
        outcome.map_err(|_| signature::Error::new())
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

/// An uncompressed SEC1 point of the given coordinate width, checked up front
/// so a wrong-curve key is a key error rather than a silent "bad signature".
fn sec1_point(key: &DecodingKey, coord_len: usize) -> Result<Vec<u8>> {
    let bytes = encoded_bytes(key)?;
    if bytes.len() != 1 + 2 * coord_len || bytes.first() != Some(&0x04) {
        return Err(new_error(ErrorKind::InvalidEcdsaKey));
    }
    Ok(bytes.to_vec())
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let class = KeyClass::of(*alg)?;
    if key.family() != class.family() {
        return Err(new_error(ErrorKind::InvalidKeyFormat));
    }
    let material = match class {
        KeyClass::Ed25519 => {
            let bytes = encoded_bytes(key)?;
            if bytes.len() != sig::ED25519_PUBLIC_KEY_LEN {
                return Err(new_error(ErrorKind::InvalidEddsaKey));
            }
            PublicMaterial::Encoded {
                scheme: &sig::ED25519,
                key: bytes.to_vec(),
            }
        }
        // `_FIXED`, not `_ASN1`: JWS (RFC 7518 §3.4) carries r‖s, and accepting
        // DER too would give every signature a second valid encoding.
        KeyClass::EcP256 => PublicMaterial::Encoded {
            scheme: &sig::ECDSA_P256_SHA256_FIXED,
            key: sec1_point(key, 32)?,
        },
        KeyClass::EcP384 => PublicMaterial::Encoded {
            scheme: &sig::ECDSA_P384_SHA384_FIXED,
            key: sec1_point(key, 48)?,
        },
        KeyClass::Rsa => {
            let params =
                rsa_verification(*alg).ok_or_else(|| new_error(ErrorKind::InvalidAlgorithm))?;
            match key.kind() {
                DecodingKeyKind::SecretOrDer(der) => PublicMaterial::Encoded {
                    scheme: params,
                    key: der.clone(),
                },
                DecodingKeyKind::RsaModulusExponent { n, e } => PublicMaterial::RsaComponents {
                    params,
                    n: n.clone(),
                    e: e.clone(),
                },
            }
        }
    };
    Ok(Box::new(RingVerifier {
        alg: *alg,
        material,
    }))
}

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let pair = parse_rsa(der).map_err(|_| KeyClass::Rsa.invalid_key())?;
    let components: sig::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
    Ok((components.n, components.e))
}

/// ring has no public parser for a bare `RSAPublicKey`, so this reads the
/// two-INTEGER SEQUENCE itself, strictly (DER, no trailing bytes).
fn rsa_components_from_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    parse_rsa_public_key(der).ok_or_else(|| {
        new_error(ErrorKind::InvalidRsaKey(
            "not a DER PKCS#1 RSAPublicKey".to_owned(),
        ))
    })
}

/// `(n, e)` of a DER PKCS#1 `RSAPublicKey`, big-endian without sign octets.
pub(crate) fn parse_rsa_public_key(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (body, rest) = der_take(der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (n, body) = der_take(body, 0x02)?;
    let (e, body) = der_take(body, 0x02)?;
    if !body.is_empty() {
        return None;
    }
    Some((der_unsigned(n)?, der_unsigned(e)?))
}

/// Splits one DER TLV with the expected tag off the front of `input`.
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        // 0 is BER's indefinite length; more than 4 length bytes is no key.
        if count == 0 || count > 4 {
            return None;
        }
        let (len_bytes, rest) = rest.split_at_checked(count)?;
        if len_bytes.first() == Some(&0) {
            return None;
        }
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 {
            return None;
        }
        (len, rest)
    };
    rest.split_at_checked(len)
}

/// A DER INTEGER's content as a minimal unsigned big-endian number (what JWK
/// `n`/`e` need); negative or non-minimal encodings are rejected.
fn der_unsigned(int: &[u8]) -> Option<Vec<u8>> {
    match int {
        [] => None,
        [b, ..] if b & 0x80 != 0 => None,
        [0, next, ..] if next & 0x80 == 0 => None,
        [0, rest @ ..] if !rest.is_empty() => Some(rest.to_vec()),
        _ => Some(int.to_vec()),
    }
}

fn ec_components_from_private_key(
    der: &[u8],
    alg: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    let (signing, curve, coord_len): (&'static sig::EcdsaSigningAlgorithm, _, _) = match alg {
        Algorithm::ES256 => (
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            EllipticCurve::P256,
            32,
        ),
        Algorithm::ES384 => (
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            EllipticCurve::P384,
            48,
        ),
        _ => return Err(new_error(ErrorKind::InvalidEcdsaKey)),
    };
    let pair = parse_ecdsa(signing, der).map_err(|_| new_error(ErrorKind::InvalidEcdsaKey))?;
    match pair.public_key().as_ref().split_first() {
        Some((0x04, xy)) if xy.len() == 2 * coord_len => {
            let (x, y) = xy.split_at(coord_len);
            Ok((curve, x.to_vec(), y.to_vec()))
        }
        _ => Err(new_error(ErrorKind::InvalidEcdsaKey)),
    }
}

fn ed_public_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    match curve {
        EllipticCurve::Ed25519 => sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(|pair| pair.public_key().as_ref().to_vec())
            .map_err(|_| new_error(ErrorKind::InvalidEddsaKey)),
        _ => Err(new_error(ErrorKind::InvalidAlgorithm)),
    }
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    };
    Ok(digest::digest(alg, data).as_ref().to_vec())
}

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
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::crypto::{sign, verify};
    use std::str::FromStr;

    fn d64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).expect("test vector is base64url")
    }

    fn e64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    // ---- RFC 8037 Appendix A (Ed25519) ----

    const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    const RFC8037_SIG: &str =
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    /// PKCS#8 v1 (RFC 8410) wrapping of a raw Ed25519 seed.
    fn ed25519_pkcs8_v1(seed: &[u8]) -> Vec<u8> {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(seed);
        der
    }

    fn rfc8037_encoding_key() -> EncodingKey {
        EncodingKey::from_ed_der(&ed25519_pkcs8_v1(&d64(RFC8037_D)))
    }

    fn rfc8037_decoding_key() -> DecodingKey {
        DecodingKey::from_ed_components(RFC8037_X).expect("valid x")
    }

    #[test]
    fn rfc8037_a2_public_key_derived_from_seed() {
        install();
        let pair = sig::Ed25519KeyPair::from_seed_unchecked(&d64(RFC8037_D)).expect("seed");
        assert_eq!(e64(pair.public_key().as_ref()), RFC8037_X);
    }

    #[test]
    fn rfc8037_a4_sign_raw_ring() {
        install();
        let pair = sig::Ed25519KeyPair::from_seed_unchecked(&d64(RFC8037_D)).expect("seed");
        assert_eq!(
            e64(pair.sign(RFC8037_INPUT.as_bytes()).as_ref()),
            RFC8037_SIG
        );
    }

    #[test]
    fn rfc8037_a4_sign_through_provider() {
        install();
        let got = sign(
            RFC8037_INPUT.as_bytes(),
            &rfc8037_encoding_key(),
            Algorithm::EdDSA,
        )
        .expect("sign");
        assert_eq!(got, RFC8037_SIG);
    }

    #[test]
    fn rfc8037_a5_verify_through_provider() {
        install();
        let key = rfc8037_decoding_key();
        let ok = verify(
            RFC8037_SIG,
            RFC8037_INPUT.as_bytes(),
            &key,
            Algorithm::EdDSA,
        );
        assert_eq!(ok, Ok(true));
        let tampered = verify(
            RFC8037_SIG,
            b"eyJhbGciOiJFZERTQSJ9.e30",
            &key,
            Algorithm::EdDSA,
        );
        assert_eq!(tampered, Ok(false));
    }

    #[test]
    fn rfc8037_non_canonical_s_plus_l_rejected() {
        install();
        // S+L: the same signature with S lifted by the group order. RFC 8032
        // §5.1.7 requires S < L; accepting it would make signatures malleable.
        let s_plus_l = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6KLa6_pyZkOh9Vg8wkiO1VhVsPt9g7sVvpAr_MuM0KEg";
        let got = verify(
            s_plus_l,
            RFC8037_INPUT.as_bytes(),
            &rfc8037_decoding_key(),
            Algorithm::EdDSA,
        );
        assert_eq!(got, Ok(false));
    }

    #[test]
    fn eddsa_round_trip_generated_pkcs8_v2() {
        install();
        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("gen");
        let pair = sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse");
        let key = EncodingKey::from_ed_der(pkcs8.as_ref());
        let s = sign(b"a.b", &key, Algorithm::EdDSA).expect("sign");
        let pubkey = DecodingKey::from_ed_der(pair.public_key().as_ref());
        assert_eq!(verify(&s, b"a.b", &pubkey, Algorithm::EdDSA), Ok(true));
        assert_eq!(verify(&s, b"a.c", &pubkey, Algorithm::EdDSA), Ok(false));
        forget(pkcs8.as_ref());
    }

    // ---- RFC 7515 A.2 (RS256) ----

    const A2_HEADER: &str = "eyJhbGciOiJSUzI1NiJ9";
    const JOE_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
    const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    const A2_E: &str = "AQAB";
    const A2_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
    const A2_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
    const A2_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
    const A2_DP: &str = "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0";
    const A2_DQ: &str = "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU";
    const A2_QI: &str = "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U";
    const A2_SIG: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

    fn a2_input() -> String {
        format!("{A2_HEADER}.{JOE_PAYLOAD}")
    }

    fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
        out
    }

    fn der_uint(bytes: &[u8]) -> Vec<u8> {
        let mut content = Vec::new();
        if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            content.push(0);
        }
        content.extend_from_slice(bytes);
        der_tlv(0x02, &content)
    }

    fn der_seq(items: &[Vec<u8>]) -> Vec<u8> {
        der_tlv(0x30, &items.concat())
    }

    /// PKCS#1 `RSAPrivateKey` for the RFC 7515 A.2 key.
    fn a2_pkcs1() -> Vec<u8> {
        let mut items = vec![der_uint(&[0])];
        for c in [A2_N, A2_E, A2_D, A2_P, A2_Q, A2_DP, A2_DQ, A2_QI] {
            items.push(der_uint(&d64(c)));
        }
        der_seq(&items)
    }

    /// PKCS#8 v1 wrapping of [`a2_pkcs1`] (rsaEncryption, NULL parameters).
    fn a2_pkcs8() -> Vec<u8> {
        let rsa_encryption = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
        ];
        der_seq(&[
            der_uint(&[0]),
            der_tlv(0x30, &rsa_encryption),
            der_tlv(0x04, &a2_pkcs1()),
        ])
    }

    /// PKCS#1 `RSAPublicKey` for the A.2 key.
    fn a2_public_der() -> Vec<u8> {
        der_seq(&[der_uint(&d64(A2_N)), der_uint(&d64(A2_E))])
    }

    #[test]
    fn rfc7515_a2_rs256_raw_ring_from_components() {
        install();
        let comps = ring::rsa::KeyPairComponents {
            public_key: ring::rsa::PublicKeyComponents {
                n: d64(A2_N),
                e: d64(A2_E),
            },
            d: d64(A2_D),
            p: d64(A2_P),
            q: d64(A2_Q),
            dP: d64(A2_DP),
            dQ: d64(A2_DQ),
            qInv: d64(A2_QI),
        };
        let pair = sig::RsaKeyPair::from_components(&comps).expect("A.2 key");
        let mut out = vec![0u8; pair.public().modulus_len()];
        pair.sign(
            &sig::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            a2_input().as_bytes(),
            &mut out,
        )
        .expect("sign");
        assert_eq!(e64(&out), A2_SIG);
    }

    #[test]
    fn rfc7515_a2_rs256_verify_through_provider() {
        install();
        let input = a2_input();
        let by_components = DecodingKey::from_rsa_components(A2_N, A2_E).expect("n,e");
        assert_eq!(
            verify(A2_SIG, input.as_bytes(), &by_components, Algorithm::RS256),
            Ok(true)
        );
        let by_der = DecodingKey::from_rsa_der(&a2_public_der());
        assert_eq!(
            verify(A2_SIG, input.as_bytes(), &by_der, Algorithm::RS256),
            Ok(true)
        );
        // Same key, other hash: must not cross-verify.
        assert_eq!(
            verify(A2_SIG, input.as_bytes(), &by_components, Algorithm::RS512),
            Ok(false)
        );
    }

    #[test]
    fn rfc7515_a2_rs256_sign_through_provider_pkcs8() {
        install();
        // PKCS#1 v1.5 is deterministic, so the provider must reproduce A.2
        // exactly (the PKCS#1 encoding is covered by the cache test below).
        let got = sign(
            a2_input().as_bytes(),
            &EncodingKey::from_rsa_der(&a2_pkcs8()),
            Algorithm::RS256,
        )
        .expect("sign");
        assert_eq!(got, A2_SIG);
    }

    #[test]
    fn rfc7515_a2_key_all_rsa_algorithms_round_trip() {
        install();
        let enc = EncodingKey::from_rsa_der(&a2_pkcs8());
        let dec = DecodingKey::from_rsa_components(A2_N, A2_E).expect("n,e");
        let algs = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ];
        for alg in algs {
            let s = sign(b"h.p", &enc, alg).expect("sign");
            assert_eq!(verify(&s, b"h.p", &dec, alg), Ok(true), "{alg:?}");
            assert_eq!(verify(&s, b"h.q", &dec, alg), Ok(false), "{alg:?}");
            for other in algs.iter().filter(|&&o| o != alg) {
                assert_eq!(
                    verify(&s, b"h.p", &dec, *other),
                    Ok(false),
                    "{alg:?} as {other:?}"
                );
            }
        }
    }

    // ---- RFC 7515 A.3 (ES256) ----

    const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const A3_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
    const A3_HEADER: &str = "eyJhbGciOiJFUzI1NiJ9";
    const A3_SIG: &str =
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    const A3_SIG_MALLEATED: &str =
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmU69fgrc8OPGycO0lD3tat_FoFp57SETepkeks4eL_QfA";

    fn a3_input() -> String {
        format!("{A3_HEADER}.{JOE_PAYLOAD}")
    }

    fn a3_key() -> DecodingKey {
        DecodingKey::from_ec_components(A3_X, A3_Y).expect("x,y")
    }

    #[test]
    fn rfc7515_a3_es256_verifies_through_provider() {
        install();
        // This vector's S is above n/2 ("high S"); JOSE has no low-S rule, so
        // rejecting it would break interop with conforming signers.
        assert_eq!(
            verify(A3_SIG, a3_input().as_bytes(), &a3_key(), Algorithm::ES256),
            Ok(true)
        );
    }

    #[test]
    fn rfc7515_a3_es256_malleated_twin_also_verifies() {
        install();
        // (r, n−s) is an equally valid ECDSA signature. So token bytes are not
        // unique per token: revocation and replay checks must key on `jti`,
        // never on the raw token or signature bytes.
        assert_eq!(
            verify(
                A3_SIG_MALLEATED,
                a3_input().as_bytes(),
                &a3_key(),
                Algorithm::ES256
            ),
            Ok(true)
        );
    }

    #[test]
    fn rfc7515_a3_es256_rejected_encodings() {
        install();
        let sig_bytes = d64(A3_SIG);
        let mut long = sig_bytes.clone();
        long.push(0);
        let rejected = [
            // ASN.1 DER form of the valid signature: JWS requires r‖s.
            "MEUCIA7RIVN5Y2xIPC9_FVgH1AKjsigDOvl8fheBmsMWnqZlAiEAxQoH04w8cOXY8S2vCEpUgKZlkMXyk1Cajz9_ioOjVNU".to_owned(),
            // "Psychic signature" r = s = 0 (CVE-2022-21449).
            "A".repeat(86),
            "MAYCAQACAQA".to_owned(),
            // r = s = n, i.e. zero mod n.
            "_____wAAAAD__________7zm-q2nF56E87nKwvxjJVH_____AAAAAP__________vOb6racXnoTzucrC_GMlUQ".to_owned(),
            e64(&sig_bytes[..63]),
            e64(&long),
        ];
        for s in &rejected {
            assert_eq!(
                verify(s, a3_input().as_bytes(), &a3_key(), Algorithm::ES256),
                Ok(false),
                "{s}"
            );
        }
    }

    #[test]
    fn rfc7515_a3_private_key_matches_public_point() {
        install();
        let pub_point = [vec![4], d64(A3_X), d64(A3_Y)].concat();
        let pair = sig::EcdsaKeyPair::from_private_key_and_public_key(
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            &d64(A3_D),
            &pub_point,
            &SystemRandom::new(),
        )
        .expect("A.3 key");
        let s = pair
            .sign(&SystemRandom::new(), a3_input().as_bytes())
            .expect("sign");
        assert_eq!(
            verify(
                &e64(s.as_ref()),
                a3_input().as_bytes(),
                &a3_key(),
                Algorithm::ES256
            ),
            Ok(true)
        );
    }

    fn ecdsa_round_trip(alg: Algorithm, signing: &'static sig::EcdsaSigningAlgorithm) {
        let rng = SystemRandom::new();
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("gen");
        let pair = sig::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("parse");
        let enc = EncodingKey::from_ec_der(pkcs8.as_ref());
        let dec = DecodingKey::from_ec_der(pair.public_key().as_ref());
        let s = sign(b"h.p", &enc, alg).expect("sign");
        assert_eq!(verify(&s, b"h.p", &dec, alg), Ok(true));
        assert_eq!(verify(&s, b"h.q", &dec, alg), Ok(false));
        forget(pkcs8.as_ref());
    }

    #[test]
    fn es256_round_trip_generated_key() {
        install();
        ecdsa_round_trip(Algorithm::ES256, &sig::ECDSA_P256_SHA256_FIXED_SIGNING);
    }

    #[test]
    fn es384_round_trip_generated_key() {
        install();
        ecdsa_round_trip(Algorithm::ES384, &sig::ECDSA_P384_SHA384_FIXED_SIGNING);
    }

    #[test]
    fn es256_key_used_for_es384_is_an_error_cached_or_not() {
        install();
        let rng = SystemRandom::new();
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("gen");
        let enc = EncodingKey::from_ec_der(pkcs8.as_ref());
        assert!(sign(b"m", &enc, Algorithm::ES384).is_err());
        assert!(sign(b"m", &enc, Algorithm::ES256).is_ok());
        // Now cached as P-256: the hit must not bypass the curve check.
        assert!(sign(b"m", &enc, Algorithm::ES384).is_err());
        forget(pkcs8.as_ref());
    }

    // ---- RFC 7515 A.4 (ES512) ----

    #[test]
    fn rfc7515_a4_es512_unsupported() {
        install();
        // jsonwebtoken has no P-521 variant, so a token headed
        // eyJhbGciOiJFUzUxMiJ9 ("ES512") cannot even name an algorithm.
        assert_eq!(
            String::from_utf8(d64("eyJhbGciOiJFUzUxMiJ9")).expect("utf8"),
            r#"{"alg":"ES512"}"#
        );
        assert!(Algorithm::from_str("ES512").is_err());
        assert!(jsonwebtoken::decode_header("eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.AAAA").is_err());
    }

    // ---- RFC 7515 A.1 (HS256) and HMAC refusal ----

    const A1_INPUT: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
    const A1_KEY: &str =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    const A1_SIG: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    #[test]
    fn rfc7515_a1_hs256_vector_checks_with_raw_ring_hmac() {
        install();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &d64(A1_KEY));
        assert!(ring::hmac::verify(&key, A1_INPUT.as_bytes(), &d64(A1_SIG)).is_ok());
    }

    fn is_hmac_refusal(r: &Result<impl std::fmt::Debug>) -> bool {
        matches!(r, Err(e) if matches!(e.kind(), ErrorKind::Provider(m) if m == HMAC_REFUSED))
    }

    #[test]
    fn rfc7515_a1_hs256_refused_by_provider() {
        install();
        // The vector is genuine (previous test), yet the provider never says Ok(true).
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let r = verify(
                A1_SIG,
                A1_INPUT.as_bytes(),
                &DecodingKey::from_secret(&d64(A1_KEY)),
                alg,
            );
            assert!(is_hmac_refusal(&r), "{alg:?}: {r:?}");
            let s = sign(
                A1_INPUT.as_bytes(),
                &EncodingKey::from_secret(&d64(A1_KEY)),
                alg,
            );
            assert!(is_hmac_refusal(&s), "{alg:?}");
        }
    }

    #[test]
    fn hs_confusion_vectors_against_rfc8037_key_rejected() {
        install();
        let prefix = "eyJhbGciOiJIUzI1NiJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.";
        let sigs = [
            "QQwDLiq54UNDU3sRHRIjel55pW60FDiRX9Fcr27PK2I",
            "-KEEupmDOlbn3U_ZNXEeHeuukQSQdg0umzPl_ZmYbZg",
            "WCU3d-Afg4HqExkFGOIiPqLTRoPFHfRVKfS1PkK8qos",
            "IrF8BibZdrJiBLoD6upI6oVytJpliHrO1ViTS387xUg",
            "9fGCo2KsiFM1MzooGSa647fcFBPqBAvxTIKej_5QaiA",
            "DmwMbnJABMzFPeP0qUyFKnAc3vyHPqKkShL7uTdls-w",
        ];
        let ed_key = rfc8037_decoding_key();
        let x = d64(RFC8037_X);
        // Plausible ways an attacker might turn the public key into a secret.
        let secrets: Vec<Vec<u8>> = vec![
            x.clone(),
            RFC8037_X.as_bytes().to_vec(),
            crate_jwk_json().into_bytes(),
        ];
        for s in sigs {
            let token = format!("{prefix}{s}");
            let (msg, sig_part) = token.rsplit_once('.').expect("three parts");
            assert_eq!(
                verify(sig_part, msg.as_bytes(), &ed_key, Algorithm::EdDSA),
                Ok(false)
            );
            let hs = verify(sig_part, msg.as_bytes(), &ed_key, Algorithm::HS256);
            assert!(is_hmac_refusal(&hs), "{hs:?}");
            for secret in &secrets {
                let hs = verify(
                    sig_part,
                    msg.as_bytes(),
                    &DecodingKey::from_secret(secret),
                    Algorithm::HS256,
                );
                assert!(is_hmac_refusal(&hs));
            }
            let decoded = jsonwebtoken::decode::<serde_json::Value>(
                &token,
                &ed_key,
                &jsonwebtoken::Validation::new(Algorithm::EdDSA),
            );
            assert!(decoded.is_err());
        }
    }

    fn crate_jwk_json() -> String {
        format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{RFC8037_X}"}}"#)
    }

    // ---- key/algorithm family checks ----

    #[test]
    fn key_family_mismatch_is_error() {
        install();
        let ed_enc = rfc8037_encoding_key();
        for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::PS256] {
            assert!(sign(b"m", &ed_enc, alg).is_err(), "{alg:?}");
        }
        let rsa_enc = EncodingKey::from_rsa_der(&a2_pkcs8());
        assert!(sign(b"m", &rsa_enc, Algorithm::EdDSA).is_err());
        assert!(sign(b"m", &rsa_enc, Algorithm::ES256).is_err());

        let ed_dec = rfc8037_decoding_key();
        let rsa_dec = DecodingKey::from_rsa_components(A2_N, A2_E).expect("n,e");
        assert!(
            verify(
                RFC8037_SIG,
                RFC8037_INPUT.as_bytes(),
                &ed_dec,
                Algorithm::ES256
            )
            .is_err()
        );
        assert!(verify(A2_SIG, a2_input().as_bytes(), &rsa_dec, Algorithm::EdDSA).is_err());
        assert!(verify(A3_SIG, a3_input().as_bytes(), &a3_key(), Algorithm::RS256).is_err());
        // Right family, wrong shape: P-256 point offered for ES384.
        assert!(verify(A3_SIG, a3_input().as_bytes(), &a3_key(), Algorithm::ES384).is_err());
    }

    #[test]
    fn garbage_keys_and_signatures_never_panic() {
        install();
        let mut blobs: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0x30], vec![0xff; 300]];
        blobs.extend(
            (0..a2_pkcs8().len())
                .step_by(97)
                .map(|n| a2_pkcs8()[..n].to_vec()),
        );
        blobs.extend((0..48).map(|n| ed25519_pkcs8_v1(&d64(RFC8037_D))[..n].to_vec()));
        blobs.push(vec![0x04; 65]);
        blobs.push(vec![0x04; 97]);
        blobs.push(vec![0x11; 32]);
        let algs = [
            Algorithm::EdDSA,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::RS256,
            Algorithm::PS512,
        ];
        for blob in &blobs {
            for alg in algs {
                let (enc, dec) = match alg {
                    Algorithm::EdDSA => (
                        EncodingKey::from_ed_der(blob),
                        DecodingKey::from_ed_der(blob),
                    ),
                    Algorithm::ES256 | Algorithm::ES384 => (
                        EncodingKey::from_ec_der(blob),
                        DecodingKey::from_ec_der(blob),
                    ),
                    _ => (
                        EncodingKey::from_rsa_der(blob),
                        DecodingKey::from_rsa_der(blob),
                    ),
                };
                assert!(sign(b"m", &enc, alg).is_err());
                assert!(warm(alg, blob).is_err());
                for sig_len in [0usize, 1, 64, 96, 256] {
                    let s = e64(&vec![0x5a; sig_len]);
                    assert!(!matches!(verify(&s, b"m", &dec, alg), Ok(true)));
                }
            }
            assert!(rsa_components_from_private_key(blob).is_err());
            assert!(rsa_components_from_public_key(blob).is_err());
            assert!(ec_components_from_private_key(blob, Algorithm::ES256).is_err());
            assert!(ed_public_from_private_key(blob, &EllipticCurve::Ed25519).is_err());
        }
        // Bad base64 in the signature is an error, not a panic.
        assert!(verify("!!", b"m", &rfc8037_decoding_key(), Algorithm::EdDSA).is_err());
    }

    // ---- parsed-key cache ----

    #[test]
    fn cache_parses_once_and_forget_drops() {
        install();
        let rng = SystemRandom::new();
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("gen");
        let enc = EncodingKey::from_ec_der(pkcs8.as_ref());
        let bytes = pkcs8.as_ref();
        assert_eq!(test_counters::parses(bytes), 0);
        sign(b"one", &enc, Algorithm::ES256).expect("sign");
        sign(b"two", &enc, Algorithm::ES256).expect("sign");
        assert_eq!(test_counters::parses(bytes), 1);
        assert!(SIGNERS.load().contains_key(&cache_key(bytes)));
        assert!(cached_signers() >= 1);

        forget(bytes);
        assert!(!SIGNERS.load().contains_key(&cache_key(bytes)));
        sign(b"three", &enc, Algorithm::ES256).expect("sign");
        assert_eq!(test_counters::parses(bytes), 2);
        forget(bytes);
    }

    #[test]
    fn rfc7515_a2_pkcs1_key_parsed_once_for_all_rsa_algorithms() {
        install();
        // Only this test signs with the PKCS#1 encoding, so its counter is ours.
        let der = a2_pkcs1();
        let enc = EncodingKey::from_rsa_der(&der);
        let first = sign(a2_input().as_bytes(), &enc, Algorithm::RS256).expect("sign");
        assert_eq!(first, A2_SIG);
        for alg in [Algorithm::PS256, Algorithm::RS384, Algorithm::PS512] {
            sign(b"m", &enc, alg).expect("sign");
        }
        assert_eq!(test_counters::parses(&der), 1);
        forget(&der);
    }

    #[test]
    fn warm_preparses_so_first_sign_hits_cache() {
        install();
        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("gen");
        let bytes = pkcs8.as_ref();
        warm(Algorithm::EdDSA, bytes).expect("warm");
        assert_eq!(test_counters::parses(bytes), 1);
        sign(b"m", &EncodingKey::from_ed_der(bytes), Algorithm::EdDSA).expect("sign");
        assert_eq!(test_counters::parses(bytes), 1);
        assert!(warm(Algorithm::HS256, bytes).is_err());
        assert!(warm(Algorithm::ES256, bytes).is_err());
        forget(bytes);
    }

    #[test]
    fn cache_cap_starts_a_fresh_map() {
        let mut map: HashMap<CacheKey, u32> = HashMap::new();
        for i in 0..4u8 {
            map = with_entry(&map, [i; 32], u32::from(i), 4);
        }
        assert_eq!(map.len(), 4);
        // Re-inserting a present key must not count as overflow.
        map = with_entry(&map, [0; 32], 9, 4);
        assert_eq!(map.len(), 4);
        map = with_entry(&map, [7; 32], 7, 4);
        assert_eq!(map.len(), 1);
        assert_eq!(map.get(&[7; 32]), Some(&7));
    }

    #[test]
    fn cache_is_keyed_by_digest_not_bytes() {
        let key = cache_key(b"secret key bytes");
        assert_eq!(
            key.as_slice(),
            digest::digest(&digest::SHA256, b"secret key bytes").as_ref()
        );
    }

    // ---- key_utils ----

    #[test]
    fn key_utils_rsa_components_from_private_and_public_key() {
        install();
        let utils = &RING_PROVIDER.key_utils;
        for der in [a2_pkcs8(), a2_pkcs1()] {
            let (n, e) = (utils.rsa_pub_components_from_private_key)(&der).expect("rsa");
            assert_eq!((e64(&n), e64(&e)), (A2_N.to_owned(), A2_E.to_owned()));
        }
        let (n, e) = (utils.rsa_pub_components_from_public_key)(&a2_public_der()).expect("rsa");
        assert_eq!((e64(&n), e64(&e)), (A2_N.to_owned(), A2_E.to_owned()));
    }

    #[test]
    fn rsa_public_key_der_parser_is_strict() {
        let good = a2_public_der();
        assert!(parse_rsa_public_key(&good).is_some());
        for n in 0..good.len() {
            assert!(parse_rsa_public_key(&good[..n]).is_none(), "prefix {n}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(parse_rsa_public_key(&trailing).is_none());
        // Negative modulus (no sign byte), non-minimal zero padding, BER length.
        assert!(parse_rsa_public_key(&der_seq(&[der_tlv(2, &[0x80]), der_uint(&[3])])).is_none());
        assert!(parse_rsa_public_key(&der_seq(&[der_tlv(2, &[0, 1]), der_uint(&[3])])).is_none());
        assert!(
            parse_rsa_public_key(&[0x30, 0x80, 0x02, 0x01, 0x01, 0x02, 0x01, 0x03, 0, 0]).is_none()
        );
        assert_eq!(
            parse_rsa_public_key(&der_seq(&[der_uint(&[0xc5]), der_uint(&[3])])),
            Some((vec![0xc5], vec![3]))
        );
    }

    #[test]
    fn key_utils_ec_components_from_private_key() {
        install();
        let rng = SystemRandom::new();
        for (alg, signing, curve, w) in [
            (
                Algorithm::ES256,
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                EllipticCurve::P256,
                32,
            ),
            (
                Algorithm::ES384,
                &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
                EllipticCurve::P384,
                48,
            ),
        ] {
            let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("gen");
            let pair = sig::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("parse");
            let (c, x, y) =
                (RING_PROVIDER.key_utils.ec_pub_components_from_private_key)(pkcs8.as_ref(), alg)
                    .expect("ec");
            assert_eq!(c, curve);
            assert_eq!(x.len(), w);
            assert_eq!([&[4u8][..], &x, &y].concat(), pair.public_key().as_ref());
            let wrong = if alg == Algorithm::ES256 {
                Algorithm::ES384
            } else {
                Algorithm::ES256
            };
            assert!(
                (RING_PROVIDER.key_utils.ec_pub_components_from_private_key)(pkcs8.as_ref(), wrong)
                    .is_err()
            );
        }
    }

    #[test]
    fn key_utils_rfc8037_ed_public_from_private_and_jwk_thumbprint() {
        install();
        let pkcs8 = ed25519_pkcs8_v1(&d64(RFC8037_D));
        let x = (RING_PROVIDER.key_utils.ed_pub_components_from_private_key)(
            &pkcs8,
            &EllipticCurve::Ed25519,
        )
        .expect("ed");
        assert_eq!(e64(&x), RFC8037_X);
        assert!(
            (RING_PROVIDER.key_utils.ed_pub_components_from_private_key)(
                &pkcs8,
                &EllipticCurve::P256
            )
            .is_err()
        );
        // jsonwebtoken's own JWK code, running on this provider's key_utils,
        // lands on RFC 8037 A.3's thumbprint.
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
            &EncodingKey::from_ed_der(&pkcs8),
            Algorithm::EdDSA,
        )
        .expect("jwk");
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn key_utils_compute_digest() {
        install();
        let f = RING_PROVIDER.key_utils.compute_digest;
        assert_eq!(f(b"abc", ThumbprintHash::SHA256).expect("d").len(), 32);
        assert_eq!(f(b"abc", ThumbprintHash::SHA384).expect("d").len(), 48);
        assert_eq!(
            e64(&f(b"abc", ThumbprintHash::SHA512).expect("d")),
            e64(digest::digest(&digest::SHA512, b"abc").as_ref())
        );
    }

    // ---- install ----

    #[test]
    fn install_is_idempotent_under_race() {
        let handles: Vec<_> = (0..8).map(|_| std::thread::spawn(install)).collect();
        for h in handles {
            h.join().expect("install must not panic");
        }
        install();
        install();
    }
}
