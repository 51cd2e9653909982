//! Importing an existing RSA private key (PEM) for verifiers that only know RS256 or
//! PS256. Pure: PEM → checked key → a sealed [`KeyRow`]; storing it is the caller's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature as sig;
use zeroize::Zeroizing;

use super::jwk;
use super::seal::MasterKey;
use crate::error::{Error, Result};
use crate::store::keys::KeyRow;

/// The smallest RSA modulus accepted, in bits (RFC 7518 §3.3: 2048 or larger).
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// An algorithm an imported key may be used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImportAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
}

impl ImportAlg {
    /// Its JWS name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ImportAlg::RS256 => "RS256",
            ImportAlg::PS256 => "PS256",
        }
    }
}

impl std::str::FromStr for ImportAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "RS256" => Ok(ImportAlg::RS256),
            "PS256" => Ok(ImportAlg::PS256),
            other => Err(format!(
                "unsupported algorithm {other:?}: an imported key signs RS256 or PS256"
            )),
        }
    }
}

/// Checks the PEM private key and seals it under `master` as a new, active signing
/// key row created at `now`. Accepts PKCS#8 (`BEGIN PRIVATE KEY`) and PKCS#1
/// (`BEGIN RSA PRIVATE KEY`); refuses encrypted PEM, non-RSA keys and moduli under
/// [`MIN_RSA_BITS`] with a message saying which.
pub(crate) fn rsa_key_row(
    alg: ImportAlg,
    pem: &str,
    master: &MasterKey,
    now: i64,
) -> Result<KeyRow> {
    let (label, der) = pem_private_key(pem)?;
    let pair = match label.as_str() {
        "PRIVATE KEY" => sig::RsaKeyPair::from_pkcs8(&der).map_err(|e| {
            if is_other_key_type(&der) {
                invalid("the PEM holds an EC or Ed25519 key, not an RSA key".into())
            } else {
                rejected(e)
            }
        })?,
        "RSA PRIVATE KEY" => sig::RsaKeyPair::from_der(&der).map_err(rejected)?,
        "ENCRYPTED PRIVATE KEY" => {
            return Err(invalid(
                "the PEM key is encrypted: decrypt it first (openssl pkey -in FILE -out PLAIN)"
                    .into(),
            ));
        }
        "EC PRIVATE KEY" | "OPENSSH PRIVATE KEY" => {
            return Err(invalid(format!("the PEM holds a {label}, not an RSA key")));
        }
        other => {
            return Err(invalid(format!(
                "unexpected PEM block \"{other}\": expected PRIVATE KEY or RSA PRIVATE KEY"
            )));
        }
    };
    let bits = pair.public().modulus_len() * 8;
    if bits < MIN_RSA_BITS {
        return Err(invalid(format!(
            "RSA key is {bits} bits; at least {MIN_RSA_BITS} are required"
        )));
    }
    let public_der = pair.public().as_ref().to_vec();
    let components: sig::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
    let kid = jwk::thumbprint_rsa(&components.n, &components.e);
    Ok(KeyRow {
        sealed_private: master.seal(&kid, &der)?,
        kid,
        alg: alg.name().to_string(),
        public_key: public_der,
        created_at: now,
        activates_at: now,
        retired_at: None,
        verify_until: None,
    })
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

fn rejected(e: ring::error::KeyRejected) -> Error {
    invalid(match e.to_string().as_str() {
        "TooSmall" => format!("RSA key too small: at least {MIN_RSA_BITS} bits are required"),
        "TooLarge" => "RSA key too large: at most 8192 bits are supported".into(),
        "PrivateModulusLenNotMultipleOf512Bits" => {
            "RSA modulus length must be a multiple of 512 bits (2048, 3072, 4096...)".into()
        }
        reason => format!("not a usable RSA private key ({reason})"),
    })
}

/// A PKCS#8 document that ring reads as an Ed25519 or P-256/P-384 key.
fn is_other_key_type(der: &[u8]) -> bool {
    let rng = ring::rand::SystemRandom::new();
    sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok()
        || sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng).is_ok()
        || sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, der, &rng).is_ok()
}

/// The label and DER of the one PEM block in `pem` (RFC 7468). The DER is secret.
fn pem_private_key(pem: &str) -> Result<(String, Zeroizing<Vec<u8>>)> {
    let mut lines = pem.lines().map(str::trim).skip_while(|l| l.is_empty());
    let first = lines.next().unwrap_or_default();
    let label = first
        .strip_prefix("-----BEGIN ")
        .and_then(|l| l.strip_suffix("-----"))
        .ok_or_else(|| invalid("not a PEM file: no -----BEGIN ...----- line".into()))?
        .to_string();
    let end = format!("-----END {label}-----");
    let mut body = Zeroizing::new(String::new());
    let mut closed = false;
    for line in lines.by_ref() {
        if line == end {
            closed = true;
            break;
        }
        if line.contains(':') {
            // RFC 1421 headers ("Proc-Type: 4,ENCRYPTED") mark legacy encrypted PEM.
            return Err(invalid(
                "the PEM key is encrypted: decrypt it first (openssl pkey -in FILE -out PLAIN)"
                    .into(),
            ));
        }
        body.push_str(line);
    }
    if !closed {
        return Err(invalid(format!("PEM block has no \"{end}\" line")));
    }
    if lines.any(|l| l.starts_with("-----BEGIN")) {
        return Err(invalid("the PEM file holds more than one block".into()));
    }
    let der = Zeroizing::new(
        B64.decode(body.as_bytes())
            .map_err(|_| invalid("PEM body is not valid base64".into()))?,
    );
    Ok((label, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_shapes_are_refused_with_a_reason() {
        let master = MasterKey::from_text(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([3u8; 32]),
        )
        .expect("master");
        let cases = [
            ("empty", "", "not a PEM file"),
            ("no end", "-----BEGIN PRIVATE KEY-----\nAAAA\n", "has no"),
            (
                "encrypted",
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            (
                "legacy encrypted",
                "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "encrypted",
            ),
            (
                "ec",
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
                "not an RSA key",
            ),
            (
                "bad base64",
                "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
                "base64",
            ),
            (
                "garbage der",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "not a usable RSA private key",
            ),
        ];
        for (name, pem, want) in cases {
            match rsa_key_row(ImportAlg::RS256, pem, &master, 1) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(want), "{name}: {m}"),
                other => panic!("{name}: {:?}", other.map(|r| r.kid)),
            }
        }
    }

    #[test]
    fn an_ed25519_pkcs8_key_is_named_as_not_rsa() {
        let rng = ring::rand::SystemRandom::new();
        let doc = sig::Ed25519KeyPair::generate_pkcs8(&rng).expect("ed25519");
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            B64.encode(doc.as_ref())
        );
        let master = MasterKey::from_text(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([3u8; 32]),
        )
        .expect("master");
        match rsa_key_row(ImportAlg::PS256, &pem, &master, 1) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("not an RSA key"), "{m}"),
            other => panic!("{:?}", other.map(|r| r.kid)),
        }
    }

    #[test]
    fn algorithm_names() {
        assert_eq!("RS256".parse::<ImportAlg>(), Ok(ImportAlg::RS256));
        assert_eq!("PS256".parse::<ImportAlg>(), Ok(ImportAlg::PS256));
        assert!("HS256".parse::<ImportAlg>().is_err());
        assert!("rs256".parse::<ImportAlg>().is_err());
    }
}
