//! The Introspect answer as the server sends it: protobuf bytes. A live access token's
//! or API key's answer is encoded on its first Introspect and kept beside the cached
//! token or the live key, so every later answer about it is a copy of those bytes:
//! no `IntrospectResponse` to build (nine strings, two lists, three timestamps), encode
//! and free per call. The claims behind it never change for the same token, nor a
//! key's record for the same `Caller`; what can change (revocation, token version,
//! expiry, key set) is checked before the answer is taken.
//!
//! build.rs generates the servers with [`Answer`] in place of `IntrospectResponse`;
//! the generated clients keep `IntrospectResponse`, which decodes these bytes.

use prost::Message;
use prost::bytes::{BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};

use super::convert::{json_to_struct, ts};
use crate::apikeys;
use crate::proto::IntrospectResponse;
use crate::store::refresh::{FamilyRow, TokenRow};
use crate::tokens::Introspection;
use crate::tokens::cache::Verified;

/// An encoded `IntrospectResponse`.
#[derive(Clone, Default, PartialEq)]
pub(crate) struct Answer(Bytes);

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Answer({} bytes)", self.0.len())
    }
}

impl Answer {
    /// The answer to an Introspect; `issuer` is this service's, for API keys and
    /// refresh tokens (an access token names its own).
    pub(crate) fn new(found: Introspection, issuer: &str) -> Answer {
        match found {
            // The default message encodes to nothing.
            Introspection::Inactive => Answer::default(),
            Introspection::AccessToken(t) => {
                Answer(t.answer.get_or_encode(|| encode(&access_token(&t))))
            }
            Introspection::ApiKey(k) => {
                Answer(k.answer.get_or_encode(|| encode(&api_key(&k, issuer))))
            }
            Introspection::RefreshToken(pair) => {
                let (t, f) = *pair;
                Answer(encode(&refresh_token(t, f, issuer)))
            }
        }
    }
}

fn encode(m: &IntrospectResponse) -> Bytes {
    m.encode_to_vec().into()
}

fn access_token(found: &Verified) -> IntrospectResponse {
    let c = &found.claims;
    IntrospectResponse {
        active: true,
        token_kind: "access_token".into(),
        subject: c.sub.clone(),
        scopes: c.scopes(),
        audience: c.aud.clone(),
        client_id: c.client_id.clone(),
        issuer: c.iss.clone(),
        token_id: c.jti.clone(),
        issued_at: ts(c.iat),
        not_before: ts(c.nbf),
        expires_at: ts(c.exp),
        token_version: c.ver,
        owner: c.owner.clone().unwrap_or_default(),
        claims: match &c.act {
            None if c.extra.is_empty() => None,
            None => Some(json_to_struct(&c.extra)),
            Some(act) => {
                let mut extra = c.extra.clone();
                extra.insert("act".into(), act.clone());
                Some(json_to_struct(&extra))
            }
        },
        ..IntrospectResponse::default()
    }
}

fn api_key(key: &apikeys::Caller, issuer: &str) -> IntrospectResponse {
    let k = &key.row;
    IntrospectResponse {
        active: true,
        token_kind: "api_key".into(),
        subject: k.owner.clone(),
        scopes: k.scopes.clone(),
        client_id: k.id.clone(),
        issuer: issuer.to_owned(),
        token_id: k.id.clone(),
        issued_at: ts(k.created_at),
        not_before: ts(k.created_at),
        expires_at: ts(k.expires_at),
        owner: k.owner.clone(),
        environment: k.environment.clone(),
        ..IntrospectResponse::default()
    }
}

fn refresh_token(t: TokenRow, f: FamilyRow, issuer: &str) -> IntrospectResponse {
    IntrospectResponse {
        active: true,
        token_kind: "refresh_token".into(),
        subject: f.subject,
        scopes: f.scopes,
        audience: f.audience,
        client_id: f.client_id,
        issuer: issuer.to_owned(),
        token_id: t.id,
        issued_at: ts(t.issued_at),
        not_before: ts(t.issued_at),
        expires_at: ts(t.expires_at.min(f.absolute_expires_at)),
        ..IntrospectResponse::default()
    }
}

impl Message for Answer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    /// The server only sends answers; decoding one, field by field, goes through the
    /// generated message so that the bytes stay a valid `IntrospectResponse`.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let mut m = IntrospectResponse::decode(&self.0[..])?;
        m.merge_field(tag, wire_type, buf, ctx)?;
        self.0 = encode(&m);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IntrospectResponse {
        IntrospectResponse {
            active: true,
            token_kind: "api_key".into(),
            subject: "team-a".into(),
            scopes: vec!["read".into(), "write".into()],
            issued_at: ts(1_700_000_000),
            expires_at: ts(1_700_003_600),
            environment: "prod".into(),
            ..IntrospectResponse::default()
        }
    }

    #[test]
    fn an_answer_is_its_message_encoded() {
        let m = sample();
        let a = Answer(encode(&m));
        let wire = a.encode_to_vec();
        assert_eq!(a.encoded_len(), m.encoded_len());
        assert_eq!(wire, m.encode_to_vec());
        assert_eq!(IntrospectResponse::decode(&wire[..]).unwrap(), m);
        // Decoded field by field, it is the same bytes again.
        assert_eq!(Answer::decode(&wire[..]).unwrap(), a);
        assert!(
            Answer::decode(&[0x0a, 0x05, b'x'][..]).is_err(),
            "truncated"
        );
    }

    #[test]
    fn inactive_is_the_empty_message() {
        let a = Answer::new(Introspection::Inactive, "https://issuer.test");
        assert!(a.encode_to_vec().is_empty());
        assert_eq!(
            IntrospectResponse::decode(&a.encode_to_vec()[..]).unwrap(),
            IntrospectResponse::default()
        );
        assert_eq!(format!("{a:?}"), "Answer(0 bytes)");
    }
}
