//! Access-token claims (RFC 9068): what Tessera signs and what the verifier reads back.

use serde::Serialize;
use serde::de::{Error as _, MapAccess};
use serde_json::{Map, Value};

use super::strict_json::{self, Name, Strict};
use super::{Jti, parse_jti, valid_field, valid_list_entry};

/// Claim names Tessera sets itself or that carry protocol meaning; extra claims may
/// not use them. The first twelve, in this order, are the members [`AccessClaims`]
/// reads itself.
pub(crate) const REGISTERED: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "scope",
    "client_id",
    "ver",
    "act",
    "owner",
    "cnf",
    "azp",
    "auth_time",
    "acr",
    "amr",
    "may_act",
    "typ",
];

/// The claims of one access token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessClaims {
    /// Issuer; compared octet for octet.
    pub iss: String,
    /// Subject (user or service).
    pub sub: String,
    /// Audiences (always an array on the wire).
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Token id (text form of a [`Jti`]).
    pub jti: String,
    /// Space-separated scopes; omitted when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// The subject's token version when this was issued.
    pub ver: u64,
    /// RFC 8693 actor chain, when the token came from a token exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
    /// Owner of the API key a `client_credentials` token was issued to (its `sub` is
    /// the key id, RFC 9068 §2.2); set by Tessera only, so an app token never passes
    /// for a user's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Extra, non-registered claims.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The claims [`AccessClaims`] reads itself, in the order of [`Fields::known`]: the
/// first twelve of [`REGISTERED`].
const KNOWN: [&str; 12] = *REGISTERED
    .first_chunk()
    .expect("REGISTERED starts with the claims AccessClaims reads");

/// A payload's members: the ones [`AccessClaims`] reads, by their index in [`KNOWN`],
/// and the rest.
#[derive(Default)]
struct Fields {
    known: [Option<Value>; 12],
    extra: Map<String, Value>,
}

impl<'de> strict_json::Members<'de> for Fields {
    fn member<A: MapAccess<'de>>(&mut self, name: Name<'de>, map: &mut A) -> Result<(), A::Error> {
        let Strict(value) = map.next_value()?;
        let duplicate = match KNOWN.iter().position(|k| *k == name.0) {
            Some(i) => self.known[i].replace(value).is_some(),
            None => self.extra.insert(name.0.into_owned(), value).is_some(),
        };
        if duplicate {
            return Err(A::Error::custom("duplicate member name"));
        }
        Ok(())
    }
}

impl Fields {
    /// The strict reading shared by [`AccessClaims::from_json`] and the tests'
    /// `AccessClaims::from_object`.
    fn into_claims(self) -> Option<(AccessClaims, Jti)> {
        let Fields { known, extra: m } = self;
        let [
            iss,
            sub,
            aud,
            exp,
            nbf,
            iat,
            jti,
            scope,
            client_id,
            ver,
            act,
            owner,
        ] = known;
        let string = |v: Option<Value>| match v {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let int = |v: Option<Value>| v.and_then(|v| v.as_i64());
        let iss = string(iss)?;
        // Identifiers obey the rule issuance enforces (no hidden characters, bounded).
        let sub = string(sub).filter(|s| !s.is_empty() && valid_field(s))?;
        let aud = match aud? {
            Value::Array(a) if !a.is_empty() => a
                .into_iter()
                .map(|v| match v {
                    Value::String(s) if valid_list_entry(&s) => Some(s),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?,
            _ => return None,
        };
        let exp = int(exp)?;
        let nbf = int(nbf)?;
        let iat = int(iat)?;
        let jti_text = string(jti)?;
        let jti = parse_jti(&jti_text)?;
        let scope = match scope {
            None => String::new(),
            Some(Value::String(s)) => s,
            Some(_) => return None,
        };
        let client_id = string(client_id).filter(|s| valid_field(s))?;
        let ver = ver?.as_u64()?;
        let act = match act {
            None => None,
            Some(v @ Value::Object(_)) => Some(v),
            Some(_) => return None,
        };
        let owner = match owner {
            None => None,
            Some(Value::String(s)) if !s.is_empty() && valid_field(&s) => Some(s),
            Some(_) => return None,
        };
        // What is left must not smuggle protocol claims Tessera never sets.
        if REGISTERED.iter().any(|k| m.contains_key(*k)) {
            return None;
        }
        let claims = AccessClaims {
            iss,
            sub,
            aud,
            exp,
            nbf,
            iat,
            jti: jti_text,
            scope,
            client_id,
            ver,
            act,
            owner,
            extra: m,
        };
        Some((claims, jti))
    }
}

impl AccessClaims {
    /// Reads claims from a parsed payload, strictly: every registered claim with its
    /// exact JSON type (`exp` as a string or a float is rejected, not coerced).
    #[cfg(test)]
    pub(crate) fn from_object(mut m: Map<String, Value>) -> Option<(Self, Jti)> {
        let mut fields = Fields::default();
        for (slot, name) in fields.known.iter_mut().zip(KNOWN) {
            *slot = m.remove(name);
        }
        fields.extra = m;
        fields.into_claims()
    }

    /// Parses a decoded payload and reads its claims: the same as
    /// `strict_json::parse_object` then `from_object` (both kept for tests), with the
    /// same refusals, without building the whole object as a map first.
    pub(crate) fn from_json(bytes: &[u8]) -> Option<(Self, Jti)> {
        strict_json::parse_members(bytes, Fields::default())?.into_claims()
    }

    /// Scopes as a list.
    pub(crate) fn scopes(&self) -> Vec<String> {
        self.scope.split_whitespace().map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"iss":"i","sub":"s","aud":["a"],"exp":10,"nbf":1,"iat":1,"jti":"AAAAAAAAAAAAAAAAAAAAAA",
               "client_id":"c","ver":0,"scope":"a b","role":"admin"})
    }

    fn parse(v: Value) -> Option<AccessClaims> {
        AccessClaims::from_object(v.as_object().unwrap().clone()).map(|(c, _)| c)
    }

    #[test]
    fn round_trip() {
        let c = parse(base()).unwrap();
        assert_eq!(c.scopes(), vec!["a", "b"]);
        assert_eq!(c.extra.get("role"), Some(&json!("admin")));
        assert_eq!(parse(serde_json::to_value(&c).unwrap()).unwrap(), c);
    }

    /// `from_json` reads exactly what `parse_object` then `from_object` reads.
    #[test]
    fn from_json_agrees_with_from_object() {
        let mut docs: Vec<String> = vec![
            base().to_string(),
            r#"{"iss":"i","sub":"s","aud":["a"],"exp":10,"nbf":1,"iat":1,"jti":"AAAAAAAAAAAAAAAAAAAAAA","client_id":"c","ver":0,"iss":"j"}"#.into(),
            r#"{"iss":"i","sub":"s","aud":["a"],"exp":10,"nbf":1,"iat":1,"jti":"AAAAAAAAAAAAAAAAAAAAAA","client_id":"c","ver":0,"\u0069ss":"j"}"#.into(),
            r#"{"iss":"i","sub":"s","aud":["a"],"exp":10,"nbf":1,"iat":1,"jti":"AAAAAAAAAAAAAAAAAAAAAA","client_id":"c","ver":0,"x":1,"x":2}"#.into(),
            r#"{"iss":"i","sub":"s","aud":["a"],"exp":10,"nbf":1,"iat":1,"jti":"AAAAAAAAAAAAAAAAAAAAAA","client_id":"c","ver":0,"act":{"sub":"a","sub":"b"}}"#.into(),
            r#"{"iss":"i","sub":"s","aud":["a"],"exp":10,"nbf":1,"iat":1,"jti":"AAAAAAAAAAAAAAAAAAAAAA","client_id":"c","ver":0,"act":{"sub":"a"},"owner":"o","x":{"y":[1,{"z":null}]}}"#.into(),
            r#"{"iss":"i\u00e9","sub":"s","aud":["a"],"exp":10,"nbf":1,"iat":1,"jti":"AAAAAAAAAAAAAAAAAAAAAA","client_id":"c","ver":0}"#.into(),
            r#"{"iss":"i","sub":"s","aud":["a"],"exp":10,"nbf":1,"iat":1,"jti":"AAAAAAAAAAAAAAAAAAAAAA","client_id":"c","ver":0} x"#.into(),
            r#"[{"iss":"i"}]"#.into(),
            "{}".into(),
            "".into(),
        ];
        for (k, v) in [
            ("exp", json!("1")),
            ("exp", json!(1.5)),
            ("exp", json!(1e3)),
            ("ver", json!(-1)),
            ("aud", json!("a")),
            ("sub", json!("a\u{200b}")),
            ("cnf", json!({})),
            ("typ", json!("x")),
        ] {
            let mut b = base();
            b[k] = v;
            docs.push(b.to_string());
        }
        for doc in &docs {
            let two_steps =
                strict_json::parse_object(doc.as_bytes()).and_then(AccessClaims::from_object);
            assert_eq!(AccessClaims::from_json(doc.as_bytes()), two_steps, "{doc}");
        }
        assert!(AccessClaims::from_json(base().to_string().as_bytes()).is_some());
    }

    #[test]
    fn strict_types() {
        let cases: &[(&str, Value)] = &[
            ("exp", json!("9999999999")),
            ("exp", json!(1893456000.5)),
            ("exp", json!(null)),
            ("exp", json!(true)),
            ("exp", json!([])),
            ("exp", json!(18446744073709551615u64)),
            ("nbf", json!("1")),
            ("sub", json!("")),
            ("sub", json!(1)),
            ("sub", json!("admin\u{200b}")),
            ("sub", json!("\u{202e}nimda")),
            ("sub", json!("admin\u{0}")),
            ("sub", json!("x".repeat(257))),
            ("aud", json!(["a\u{feff}"])),
            ("aud", json!(["a b"])),
            ("aud", json!([" "])),
            ("aud", json!(["a\u{a0}b"])),
            ("owner", json!("")),
            ("owner", json!(7)),
            ("owner", json!("o\u{200b}")),
            ("client_id", json!("c\u{2066}")),
            ("aud", json!([])),
            ("aud", json!({})),
            ("aud", json!(123)),
            ("aud", json!("a")),
            ("jti", json!(1)),
            ("jti", json!("short")),
            ("ver", json!("1")),
            ("ver", json!(-1)),
            ("act", json!("svc")),
            ("azp", json!("x")),
        ];
        for (k, v) in cases {
            let mut b = base();
            b[*k] = v.clone();
            assert!(parse(b).is_none(), "{k} = {v} accepted");
        }
        for k in [
            "iss",
            "sub",
            "aud",
            "exp",
            "nbf",
            "iat",
            "jti",
            "client_id",
            "ver",
        ] {
            let mut b = base();
            b.as_object_mut().unwrap().remove(k);
            assert!(parse(b).is_none(), "missing {k} accepted");
        }
    }
}
