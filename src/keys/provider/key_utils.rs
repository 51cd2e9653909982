//! The provider's `KeyUtils`: the public components of a key and the digests that
//! `jsonwebtoken` asks for when it builds a JWK or its thumbprint.

use jsonwebtoken::Algorithm;
use jsonwebtoken::errors::{ErrorKind, Result, new_error};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use ring::digest;
use ring::signature::{self as sig, KeyPair as _};

use super::{KeyClass, parse_p256, parse_rsa};

pub(super) fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let pair = parse_rsa(der).map_err(|_| KeyClass::Rsa.invalid_key())?;
    let components: sig::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
    Ok((components.n, components.e))
}

/// ring has no public parser for a bare `RSAPublicKey`: [`crate::keys::jwk`] has the one
/// the JWKS needs for imported keys.
pub(super) fn rsa_components_from_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    crate::keys::jwk::parse_rsa_public_key(der).ok_or_else(|| {
        new_error(ErrorKind::InvalidRsaKey(
            "not a DER PKCS#1 RSAPublicKey".to_owned(),
        ))
    })
}

pub(super) fn ec_components_from_private_key(
    der: &[u8],
    alg: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    if alg != Algorithm::ES256 {
        return Err(new_error(ErrorKind::InvalidEcdsaKey));
    }
    let pair = parse_p256(der).map_err(|_| new_error(ErrorKind::InvalidEcdsaKey))?;
    match pair.public_key().as_ref().split_first() {
        Some((0x04, xy)) if xy.len() == 64 => {
            let (x, y) = xy.split_at(32);
            Ok((EllipticCurve::P256, x.to_vec(), y.to_vec()))
        }
        _ => Err(new_error(ErrorKind::InvalidEcdsaKey)),
    }
}

pub(super) fn ed_public_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    match curve {
        EllipticCurve::Ed25519 => sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(|pair| pair.public_key().as_ref().to_vec())
            .map_err(|_| new_error(ErrorKind::InvalidEddsaKey)),
        _ => Err(new_error(ErrorKind::InvalidAlgorithm)),
    }
}

pub(super) fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    };
    Ok(digest::digest(alg, data).as_ref().to_vec())
}
