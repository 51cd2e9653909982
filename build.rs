//! Compiles `proto/` with the pure-Rust `protox` compiler (no system `protoc`) and
//! writes the descriptor set that gRPC reflection serves.

use std::{env, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let protos = ["proto/tessera/v1/tessera.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tessera_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Messages and clients.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .codec_path("crate::service::codec::StrictCodec")
        .compile_fds(fds.clone())?;
    // The servers, in a file of their own, over the messages above except one:
    // Introspect answers with bytes encoded once per live token
    // (src/service/answer.rs); clients decode them as an `IntrospectResponse`.
    let servers = out.join("servers");
    std::fs::create_dir_all(&servers)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .extern_path(".tessera.v1", "crate::proto")
        .extern_path(
            ".tessera.v1.IntrospectResponse",
            "crate::service::answer::Answer",
        )
        // Malformed requests are INVALID_ARGUMENT, not INTERNAL (src/service/codec.rs).
        .codec_path("crate::service::codec::StrictCodec")
        .out_dir(&servers)
        .compile_fds(fds)?;
    // Envoy's ext_authz, only the fields Tessera uses (see the file's header). Its
    // map entries are `bytes`, decoded as slices of the request buffer.
    let authz = protox::compile(
        ["proto/envoy/service/auth/v3/external_auth.proto"],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .bytes(".")
        .codec_path("crate::service::codec::StrictCodec")
        .compile_fds(authz)?;
    Ok(())
}
