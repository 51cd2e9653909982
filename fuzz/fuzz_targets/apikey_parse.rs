//! The API-key parser (`apikeys::parse`), which every gRPC call and every OAuth client
//! authentication runs on caller-supplied text before any lookup.
//!
//! The first input byte picks the mode:
//! - even: the rest is the key text as sent;
//! - odd: the rest is a key body and the fuzzer's text gets the correct checksum
//!   appended, so inputs reach the structure checks behind the checksum.
//!
//! Whatever the input: no panic, and a key that parses has exactly the documented
//! shape `tsk_<env>_<16 hex>_<43 base64url><6 check>`.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use libfuzzer_sys::fuzz_target;
use ring::digest::{SHA256, digest};
use tessera::apikeys;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let key = if mode % 2 == 0 {
        text.to_string()
    } else {
        let check = B64.encode(&digest(&SHA256, text.as_bytes()).as_ref()[..4]);
        format!("{text}{check}")
    };
    let Some(p) = apikeys::parse(&key) else {
        return;
    };
    assert!(key.len() <= apikeys::MAX_LEN);
    assert!(apikeys::valid_environment(p.environment), "{key:?}");
    assert_eq!(p.id.len(), 16);
    assert!(
        p.id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let head = format!("tsk_{}_{}_", p.environment, p.id);
    let tail = key
        .strip_prefix(&head)
        .expect("key starts with tsk_<env>_<id>_");
    assert_eq!(tail.len(), 43 + 6);
    assert_eq!(
        B64.decode(&tail[..43]).expect("secret is base64url").len(),
        32
    );
    assert!(apikeys::verify(&key, &apikeys::hash(&key)));
});
