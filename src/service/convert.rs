//! Translation between protobuf well-known types and plain Rust values.

use prost_types::value::Kind;
use prost_types::{Duration, ListValue, Struct, Timestamp, Value as PValue};
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// A request `ttl`: `None` when unset; negative durations are refused.
pub(crate) fn ttl(d: Option<Duration>) -> Result<Option<i64>> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            Err(Error::InvalidArgument("ttl must not be negative".into()))
        }
        // Round a fractional second up: a ttl never shrinks to zero by truncation.
        Some(d) => Ok(Some(d.seconds.saturating_add(i64::from(d.nanos > 0)))),
    }
}

/// Unix seconds → Timestamp.
pub(crate) fn ts(secs: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: secs,
        nanos: 0,
    })
}

/// protobuf Struct → JSON object. Integral numbers become JSON integers.
pub(crate) fn struct_to_json(s: Struct) -> Result<Map<String, Value>> {
    s.fields
        .into_iter()
        .map(|(k, v)| Ok((k, value_to_json(v, 0)?)))
        .collect()
}

fn value_to_json(v: PValue, depth: usize) -> Result<Value> {
    if depth > 16 {
        return Err(Error::InvalidArgument(
            "claims nested too deeply (max 16)".into(),
        ));
    }
    Ok(match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                Value::from(n as i64)
            } else {
                Value::Number(
                    Number::from_f64(n).ok_or_else(|| {
                        Error::InvalidArgument("claims: non-finite number".into())
                    })?,
                )
            }
        }
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .into_iter()
                .map(|(k, v)| Ok((k, value_to_json(v, depth + 1)?)))
                .collect::<Result<_>>()?,
        ),
        Some(Kind::ListValue(l)) => Value::Array(
            l.values
                .into_iter()
                .map(|v| value_to_json(v, depth + 1))
                .collect::<Result<_>>()?,
        ),
    })
}

/// JSON object → protobuf Struct.
pub(crate) fn json_to_struct(m: &Map<String, Value>) -> Struct {
    Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &Value) -> PValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(m) => Kind::StructValue(json_to_struct(m)),
    };
    PValue { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rules() {
        assert_eq!(ttl(None).unwrap(), None);
        assert_eq!(
            ttl(Some(Duration {
                seconds: 5,
                nanos: 0
            }))
            .unwrap(),
            Some(5)
        );
        assert_eq!(
            ttl(Some(Duration {
                seconds: 0,
                nanos: 1
            }))
            .unwrap(),
            Some(1)
        );
        assert!(
            ttl(Some(Duration {
                seconds: -1,
                nanos: 0
            }))
            .is_err()
        );
    }

    #[test]
    fn struct_round_trip() {
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"role":"admin","n":3,"f":1.5,"l":[true,null],"o":{"a":"b"}}"#)
                .unwrap();
        assert_eq!(struct_to_json(json_to_struct(&m)).unwrap(), m);
    }
}
