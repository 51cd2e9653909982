//! A9. Structure, base64url, size

use serde_json::json;
use tonic::{Code, Status};

use crate::common::authed;
use crate::forge::*;
use crate::support::*;

#[tokio::test]
async fn a9_structure_and_size() {
    let f = Fixture::start().await;
    let t0 = &f.t0;
    let (h, p, s) = (t0.h.as_str(), t0.p.as_str(), t0.s.as_str());
    let tok = t0.token.as_str();
    let mut rows = vec![
        row("A9.1 empty string", "").expect(InactiveOrInvalid),
        row("A9.1 a space", " "),
        row("A9.1 a newline", "\n"),
        row("A9.1 CRLF", "\r\n"),
        row("A9.1 a tab", "\t"),
        row("A9.2 one segment", "abc"),
        row("A9.2 T0 without dots", tok.replace('.', "")),
        row("A9.2 .", "."),
        row("A9.2 ..", ".."),
        row("A9.3 H.P", format!("{h}.{p}")),
        row("A9.3 H..S", format!("{h}..{s}")),
        row("A9.3 .P.S", format!(".{p}.{s}")),
        row("A9.3 H.P.", format!("{h}.{p}.")),
        row("A9.4 H.P.S.X", format!("{tok}.{s}")),
        row("A9.4 X.H.P.S", format!("{h}.{tok}")),
        row("A9.4 H.P.S.", format!("{tok}.")),
        row("A9.4 .H.P.S", format!(".{tok}")),
        row("A9.4 H.P.P.S", format!("{h}.{p}.{p}.{s}")),
        row("A9.5 five segments", format!("{tok}.{s}.{s}")),
        row(
            "A9.5 JWE-shaped, five segments",
            format!(
                "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..{}.{p}.{}",
                b64(random_bytes(12)),
                b64(random_bytes(16))
            ),
        ),
        row("A9.6 .....", "....."),
        row("A9.6 ...", "..."),
        row("A9.x T0 twice", format!("{tok}{tok}")),
        row("A9.x T0 upper-cased", tok.to_uppercase()),
        row("A9.x T0 lower-cased", tok.to_lowercase()),
        row("A9.x T0 reversed", tok.chars().rev().collect::<String>()),
    ];
    let segs = [("header", 0usize), ("payload", 1), ("signature", 2)];
    let with = |i: usize, new: &str| {
        let mut parts = [h.to_string(), p.to_string(), s.to_string()];
        parts[i] = new.to_string();
        parts.join(".")
    };
    for (name, i) in segs {
        let seg = [h, p, s][i];
        let mid = seg.len() / 2;
        let ins = |x: &str| format!("{}{x}{}", &seg[..mid], &seg[mid..]);
        rows.push(row(
            format!("A9.7 {name} with = appended"),
            with(i, &format!("{seg}=")),
        ));
        rows.push(row(
            format!("A9.7 {name} with == appended"),
            with(i, &format!("{seg}==")),
        ));
        rows.push(row(
            format!("A9.7 {name} with = inside"),
            with(i, &ins("=")),
        ));
        rows.push(row(
            format!("A9.7 {name} with a stray leading a"),
            with(i, &format!("a{seg}")),
        ));
        for bad in ["!", "*", "%2E", " ", "é", "．", "~", "\\", "\"", "+", "/"] {
            rows.push(row(
                format!("A9.9 {name} with {bad:?} inside"),
                with(i, &ins(bad)),
            ));
        }
        for ws in ["\r", "\n", "\t", "\r\n", "\u{b}", "\u{c}", "\u{a0}"] {
            rows.push(row(
                format!("A9.10 {name} with {ws:?} inside"),
                with(i, &ins(ws)),
            ));
        }
        rows.push(row(
            format!("A9.12 {name} with NUL inside"),
            with(i, &ins("\0")),
        ));
        let pad = (1 + 4 - seg.len() % 4) % 4;
        let pad = if pad == 0 { 4 } else { pad };
        let odd = format!("{seg}{}", "A".repeat(pad));
        assert_eq!(odd.len() % 4, 1);
        rows.push(row(format!("A9.13 {name} length = 1 mod 4"), with(i, &odd)));
        let std_seg = seg.replace('-', "+").replace('_', "/");
        if std_seg != seg {
            rows.push(row(
                format!("A9.8 {name} in the standard alphabet"),
                with(i, &std_seg),
            ));
        }
    }
    // A9.8: JSON text only yields `-`/`_` in base64url around `>`, `?`, `~`; a claim
    // holding them gives a genuine token whose payload has both alphabets' characters.
    let alpha = Jwt::new(&f.k1_claim("note", Some(json!("???>>>~~~"))));
    assert!(alpha.p.contains(['-', '_']));
    rows.push(
        row(
            "A9.8 control: K1 token with - and _ in its payload",
            alpha.token.clone(),
        )
        .expect(Active),
    );
    rows.push(row(
        "A9.8 that payload in the standard alphabet",
        format!(
            "{}.{}.{}",
            alpha.h,
            alpha.p.replace('-', "+").replace('_', "/"),
            alpha.s
        ),
    ));
    for (what, t) in [
        ("leading space", format!(" {tok}")),
        ("trailing space", format!("{tok} ")),
        ("trailing newline", format!("{tok}\n")),
        ("leading tab", format!("\t{tok}")),
        ("Bearer prefix", format!("Bearer {tok}")),
        ("bearer prefix", format!("bearer {tok}")),
        ("quoted", format!("\"{tok}\"")),
        ("BOM prefix", format!("\u{feff}{tok}")),
        ("zero-width space suffix", format!("{tok}\u{200b}")),
    ] {
        rows.push(row(format!("A9.11 {what}"), t));
    }
    rows.push(row("A9.12 NUL after T0", format!("{tok}\0")));
    rows.push(row("A9.12 NUL before T0", format!("\0{tok}")));
    rows.push(row("A9.12 NUL between segments", format!("{h}.\0{p}.{s}")));
    rows.push(row("A9.9 full-width dots", format!("{h}．{p}．{s}")));
    rows.push(row("A9.9 %2E for dots", format!("{h}%2E{p}%2E{s}")));
    // A9.14 sizes: up to the 8 KiB cap decoded and refused; over it refused before
    // decoding; over tonic's 64 KiB message limit refused by the transport.
    let seg = |n: usize| "A".repeat(n);
    rows.push(row(
        "A9.14 exactly 8 KiB, three segments",
        format!("{}.{}.{}", seg(2730), seg(2730), seg(2730)),
    ));
    rows.push(
        row(
            "A9.14 8 KiB + 1",
            format!("{}.{}.{}", seg(2731), seg(2730), seg(2730)),
        )
        .expect(InactiveOrInvalid),
    );
    rows.push(
        row(
            "A9.14 T0 padded to 8 KiB + 1",
            format!("{tok}{}", seg(8193 - tok.len())),
        )
        .expect(InactiveOrInvalid),
    );
    rows.push(
        row(
            "A9.14 64 KiB",
            format!("{}.{}.{}", seg(21_845), seg(21_845), seg(21_844)),
        )
        .expect(Refused),
    );
    rows.push(
        row(
            "A9.14 1 MiB",
            format!("{}.{}.{}", seg(349_525), seg(349_525), seg(349_524)),
        )
        .expect(TooLarge),
    );
    rows.push(
        row(
            "A9.14 4 MiB",
            format!("{}.{}.{}", seg(1 << 21), seg(1 << 20), seg(1 << 20)),
        )
        .expect(TooLarge),
    );
    rows.push(row("A9.14 8 KiB of dots", ".".repeat(8192)));
    // A9.15 JWS JSON serializations.
    rows.push(row(
        "A9.15 flattened JWS JSON",
        json!({"protected": h, "payload": p, "signature": s}).to_string(),
    ));
    rows.push(row(
        "A9.15 general JWS JSON",
        json!({"payload": p, "signatures": [{"protected": h, "signature": s}]}).to_string(),
    ));
    rows.push(row(
        "A9.x header and payload in JSON, not base64",
        format!("{}.{}.{s}", t0.header(), t0.payload()),
    ));
    rows.push(row("A9 control: T0", tok).expect(Active));
    for r in &rows {
        assert!(
            r.expect == Active || r.token != tok,
            "{}: identical to T0",
            r.name
        );
    }
    f.run("A9", rows).await;
}

/// A request whose `token` is not UTF-8 is not a protobuf `string`: tonic refuses the
/// message before Tessera sees it. It must not be answered active, and the server
/// must carry on.
#[tokio::test]
async fn a9_token_field_not_utf8_is_refused_by_the_transport() {
    use prost::bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    /// Passes pre-encoded protobuf bytes through unchanged.
    #[derive(Default)]
    struct Raw;
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    let f = Fixture::start().await;
    for (name, bytes) in [
        ("lone 0xFF", vec![0xff]),
        ("overlong C0 AF", vec![0xc0, 0xaf]),
        (
            "T0 then a truncated multibyte",
            [f.t0.token.as_bytes(), &[0xe2u8, 0x82][..]].concat(),
        ),
    ] {
        let mut msg = vec![0x0a, bytes.len() as u8];
        if bytes.len() > 127 {
            msg = vec![0x0a, (bytes.len() as u8) | 0x80, (bytes.len() >> 7) as u8];
        }
        msg.extend_from_slice(&bytes);
        let mut grpc = tonic::client::Grpc::new(f.s.channel().await);
        grpc.ready().await.unwrap();
        let got = grpc
            .unary(
                authed(msg, &f.s.admin_key),
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/tessera.v1.TokenService/Introspect",
                ),
                Raw,
            )
            .await;
        let st = got.expect_err(name);
        // The service codec answers a message that does not decode as the caller's
        // fault, never INTERNAL.
        assert_eq!(st.code(), Code::InvalidArgument, "{name}: {st:?}");
        assert!(f.active(&f.t0.token).await, "{name}: persistence check");
    }
    f.assert_healthy().await;
}
