//! Encoding and forging helpers: base64url, HMAC and attacker-key signing, PEM and
//! SSH key forms, signature malleation, published vectors.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::Ed25519KeyPair;
use serde_json::Value;

use crate::common::mint::decode;

pub(crate) fn b64(b: impl AsRef<[u8]>) -> String {
    B64.encode(b)
}

pub(crate) fn unb64(s: &str) -> Vec<u8> {
    B64.decode(s).expect("base64url")
}

pub(crate) fn b64_json(v: &Value) -> String {
    b64(v.to_string())
}

pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    SystemRandom::new().fill(&mut b).unwrap();
    b
}

/// A compact JWS split into its segments.
#[derive(Clone)]
pub(crate) struct Jwt {
    pub token: String,
    pub h: String,
    pub p: String,
    pub s: String,
}

impl Jwt {
    pub(crate) fn new(token: &str) -> Jwt {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "not a compact JWS");
        Jwt {
            token: token.into(),
            h: parts[0].into(),
            p: parts[1].into(),
            s: parts[2].into(),
        }
    }
    pub(crate) fn sig(&self) -> Vec<u8> {
        unb64(&self.s)
    }
    pub(crate) fn with_sig(&self, s64: &str) -> String {
        format!("{}.{}.{s64}", self.h, self.p)
    }
    pub(crate) fn with_sig_bytes(&self, sig: &[u8]) -> String {
        self.with_sig(&b64(sig))
    }
    pub(crate) fn with_header(&self, h64: &str) -> String {
        format!("{h64}.{}.{}", self.p, self.s)
    }
    pub(crate) fn with_payload(&self, p64: &str) -> String {
        format!("{}.{p64}.{}", self.h, self.s)
    }
    pub(crate) fn header(&self) -> Value {
        decode(&self.token).0
    }
    pub(crate) fn payload(&self) -> Value {
        decode(&self.token).1
    }
}

/// HMAC-signs `h64.p64` (the HS-confusion forgeries of A2 and A4).
pub(crate) fn hmac_token(alg: &str, key: &[u8], h64: &str, p64: &str) -> String {
    let a = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        "HS512" => hmac::HMAC_SHA512,
        other => panic!("{other}"),
    };
    let input = format!("{h64}.{p64}");
    let tag = hmac::sign(&hmac::Key::new(a, key), input.as_bytes());
    format!("{input}.{}", b64(tag))
}

/// `{...}` with one more raw member at the end.
pub(crate) fn splice(obj: &str, member: &str) -> String {
    assert!(obj.starts_with('{') && obj.ends_with('}'));
    if obj == "{}" {
        return format!("{{{member}}}");
    }
    format!("{},{member}}}", &obj[..obj.len() - 1])
}

/// `{...}` with one more raw member at the front.
pub(crate) fn splice_front(obj: &str, member: &str) -> String {
    format!("{{{member},{}", &obj[1..])
}

/// A fresh Ed25519 key pair nobody trusts.
pub(crate) fn attacker_ed25519() -> Ed25519KeyPair {
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap()
}

pub(crate) fn attacker_sign(pair: &Ed25519KeyPair, header: &Value, p64: &str) -> String {
    let input = format!("{}.{p64}", b64_json(header));
    format!("{input}.{}", b64(pair.sign(input.as_bytes())))
}

/// An OpenSSH public-key line's base64 blob: length-prefixed strings.
pub(crate) fn ssh_blob(parts: &[&[u8]]) -> String {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    STANDARD.encode(out)
}

pub(crate) fn pem(der: &[u8], eol: &str, trailing: bool) -> Vec<u8> {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let mut s = format!("-----BEGIN PUBLIC KEY-----{eol}");
    for l in lines {
        s.push_str(l);
        s.push_str(eol);
    }
    s.push_str("-----END PUBLIC KEY-----");
    if trailing {
        s.push_str(eol);
    }
    s.into_bytes()
}

/// Ed25519 group order L, little-endian (RFC 8032 §5.1).
pub(crate) const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// An Ed25519 signature with `S := S + k·L` (little-endian add; fits for k ≤ 3).
pub(crate) fn ed25519_s_plus_l(sig: &[u8], k: u32) -> Vec<u8> {
    let mut out = sig.to_vec();
    for _ in 0..k {
        let mut carry = 0u16;
        for i in 0..32 {
            let v = out[32 + i] as u16 + ED25519_L[i] as u16 + carry;
            out[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0);
    }
    out
}

/// P-256 group order n, big-endian.
pub(crate) const P256_N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";

/// `n − s` for 32-byte big-endian numbers.
pub(crate) fn p256_neg(s: &[u8]) -> Vec<u8> {
    let n = hex(P256_N);
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut v = n[i] as i16 - s[i] as i16 - borrow;
        borrow = 0;
        if v < 0 {
            v += 256;
            borrow = 1;
        }
        out[i] = v as u8;
    }
    assert_eq!(borrow, 0);
    out
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` of a fixed-width `r‖s`.
pub(crate) fn der_signature(rs: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let b = &b[b.iter().take_while(|&&x| x == 0).count().min(b.len() - 1)..];
        let mut v = vec![0x02];
        let pad = b[0] & 0x80 != 0;
        v.push((b.len() + usize::from(pad)) as u8);
        if pad {
            v.push(0);
        }
        v.extend_from_slice(b);
        v
    };
    let (r, s) = rs.split_at(rs.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

/// The same text with its last base64url character changed only in its
/// `unused_bits` low bits: a lenient decoder yields the same bytes.
pub(crate) fn trailing_bit_variants(s: &str, unused_bits: u32) -> Vec<String> {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *s.as_bytes().last().unwrap();
    let v = ALPHA.iter().position(|&c| c == last).unwrap();
    assert_eq!(
        v & ((1 << unused_bits) - 1),
        0,
        "canonical encoding expected"
    );
    (1..(1usize << unused_bits))
        .map(|low| {
            let mut t = s[..s.len() - 1].to_string();
            t.push(ALPHA[v | low] as char);
            t
        })
        .collect()
}

/// `body` plus the API-key checksum (first 4 bytes of SHA-256, base64url).
pub(crate) fn with_checksum(body: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    format!("{body}{}", b64(&d.as_ref()[..4]))
}

// Published signature vectors used by the A3 and B rows.
pub(crate) const PSYCHIC_DER: &str = "MAYCAQACAQA";
pub(crate) const P256_R_S_N: &str =
    "_____wAAAAD__________7zm-q2nF56E87nKwvxjJVH_____AAAAAP__________vOb6racXnoTzucrC_GMlUQ";
pub(crate) const RFC7515_A3_DER: &str = "MEUCIA7RIVN5Y2xIPC9_FVgH1AKjsigDOvl8fheBmsMWnqZlAiEAxQoH04w8cOXY8S2vCEpUgKZlkMXyk1Cajz9_ioOjVNU";

/// The forging helpers reproduce the derived vectors published with the catalog
/// (B12.1, B12.3, B12.4, B12.5), so the rows built with them are the intended bytes.
#[test]
fn forging_helpers_reproduce_published_vectors() {
    let rfc8037_a4 = unb64(
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
    );
    assert_eq!(
        b64(ed25519_s_plus_l(&rfc8037_a4, 1)),
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6KLa6_pyZkOh9Vg8wkiO1VhVsPt9g7sVvpAr_MuM0KEg"
    );
    let rfc7515_a3 = unb64(
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
    );
    assert_eq!(b64(der_signature(&rfc7515_a3)), RFC7515_A3_DER);
    let (r, s) = rfc7515_a3.split_at(32);
    assert_eq!(
        b64([r, &p256_neg(s)[..]].concat()),
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmU69fgrc8OPGycO0lD3tat_FoFp57SETepkeks4eL_QfA"
    );
    let variants = trailing_bit_variants("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", 2);
    for v in [
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXm",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXn",
    ] {
        assert!(variants.iter().any(|x| x == v), "{v}");
    }
}
