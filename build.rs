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
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Malformed requests are INVALID_ARGUMENT, not INTERNAL (src/service/codec.rs).
        .codec_path("crate::service::codec::StrictCodec")
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
