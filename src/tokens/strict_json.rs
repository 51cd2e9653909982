//! JSON parsing for untrusted token segments: an object at the top, no duplicate member
//! names at any depth (RFC 7515 §4 allows rejecting them; accepting them invites
//! "which `alg` wins" confusion), bounded depth (serde_json stops at 128).

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

struct Strict(Value);

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
pub fn parse_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Strict>(bytes).ok()?.0 {
        Value::Object(m) => Some(m),
        _ => None,
    }
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
