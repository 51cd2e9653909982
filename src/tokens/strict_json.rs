//! JSON parsing for untrusted token segments: an object at the top, no duplicate member
//! names at any depth (RFC 7515 §4 allows rejecting them; accepting them invites
//! "which `alg` wins" confusion), bounded depth (serde_json stops at 128).

use std::borrow::Cow;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A value parsed with the rules of this module (no duplicate names at any depth).
pub(crate) struct Strict(pub(crate) Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON without duplicate member names")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Strict, E> {
        serde_json::Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Strict(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.insert(k, v).is_some() {
                return Err(serde::de::Error::custom("duplicate member name"));
            }
        }
        Ok(Strict(Value::Object(out)))
    }
}

/// Parses `bytes` as a JSON object, rejecting duplicates, invalid UTF-8, a BOM,
/// trailing data and anything that is not an object.
#[cfg(test)]
pub(crate) fn parse_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Strict>(bytes).ok()?.0 {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A member name, borrowed from the input unless it had escapes to decode.
pub(crate) struct Name<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

/// A string member's value, borrowed when it had no escapes; `None` for any other
/// JSON value (which is still parsed with the rules of this module).
pub(crate) struct MaybeStr<'de>(pub(crate) Option<Cow<'de, str>>);

impl<'de> Deserialize<'de> for MaybeStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MaybeStrVisitor;
        impl<'de> Visitor<'de> for MaybeStrVisitor {
            type Value = MaybeStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                StrictVisitor.expecting(f)
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(Some(Cow::Owned(v))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(None))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<MaybeStr<'de>, E> {
                StrictVisitor.visit_f64(v).map(|_| MaybeStr(None))
            }
            fn visit_unit<E>(self) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<MaybeStr<'de>, A::Error> {
                StrictVisitor.visit_seq(seq).map(|_| MaybeStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MaybeStr<'de>, A::Error> {
                StrictVisitor.visit_map(map).map(|_| MaybeStr(None))
            }
        }
        d.deserialize_any(MaybeStrVisitor)
    }
}

/// The members of a top-level object, taken one at a time as the parser meets them,
/// so a caller can keep what it needs without building a [`Map`] first.
pub(crate) trait Members<'de> {
    /// Takes the member `name`; its value is next in `map` and must be read (with
    /// [`Strict`] or a type as strict) before returning. An error refuses the whole
    /// object; a repeated name must be one.
    fn member<A: MapAccess<'de>>(&mut self, name: Name<'de>, map: &mut A) -> Result<(), A::Error>;
}

struct ObjectSeed<T>(T);

impl<'de, T: Members<'de>> DeserializeSeed<'de> for ObjectSeed<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: Members<'de>> Visitor<'de> for ObjectSeed<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object without duplicate member names")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<T, A::Error> {
        while let Some(name) = map.next_key::<Name<'de>>()? {
            self.0.member(name, &mut map)?;
        }
        Ok(self.0)
    }
}

/// Parses `bytes` as the tests' `parse_object` does (same refusals, same depth
/// bound), handing each top-level member to `into` instead of collecting a [`Map`].
pub(crate) fn parse_members<'de, T: Members<'de>>(bytes: &'de [u8], into: T) -> Option<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let out = ObjectSeed(into).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_objects_only() {
        assert!(parse_object(br#"{"a":1,"b":{"c":[1,2]}}"#).is_some());
        for bad in [
            &b"0"[..],
            b"[]",
            b"\"x\"",
            b"null",
            b"true",
            b"{",
            b"",
            b"{}x",
        ] {
            assert!(
                parse_object(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rejects_duplicates_at_any_depth() {
        assert!(parse_object(br#"{"alg":"EdDSA","alg":"none"}"#).is_none());
        assert!(parse_object(br#"{"x":{"a":1,"a":2}}"#).is_none());
        // An escaped name that decodes to a duplicate is still a duplicate.
        assert!(parse_object(br#"{"alg":"a","\u0061lg":"b"}"#).is_none());
    }

    #[test]
    fn rejects_encoding_tricks_and_deep_nesting() {
        assert!(parse_object(b"\xEF\xBB\xBF{}").is_none(), "BOM");
        assert!(
            parse_object(b"{\"s\":\"\xC0\xAF\"}").is_none(),
            "overlong UTF-8"
        );
        assert!(parse_object(b"{\"s\":\"\xFF\"}").is_none());
        assert!(
            parse_object(br#"{"s":"\ud800"}"#).is_none(),
            "lone surrogate"
        );
        assert!(parse_object(br#"{"n":1e400}"#).is_none());
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_object(deep.as_bytes()).is_none());
    }
}
