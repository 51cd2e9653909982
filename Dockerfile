# Builds the image the manifests in k8s/ run (see README, "Container image").
#
# Both base images are pinned by tag *and* digest: the tag says what it is, the digest
# makes a rebuild fetch the same bytes. Bump them together, e.g. with
# `docker buildx imagetools inspect rust:1.95.0-slim-bookworm`. Builder and runtime are
# the same Debian release, so the binary finds the glibc it was linked against.

FROM rust:1.95.0-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS build
WORKDIR /src

# Dependencies first, in their own layer: it depends only on Cargo.toml and Cargo.lock,
# so editing the source reuses it instead of recompiling ~300 crates. The stubs give
# cargo the targets the manifest declares; build.rs is a stub too, so a proto change
# does not invalidate this layer (the build-dependencies still get compiled here).
COPY Cargo.toml Cargo.lock ./
# The build flags (tokio's unstable runtime API, see src/main.rs): the dependencies are
# compiled with them too.
COPY .cargo ./.cargo
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs benches/hot_path.rs \
    && echo 'fn main() {}' > build.rs \
    && cargo build --release --locked --bin tessera \
    && rm -rf src benches build.rs

# The real sources. Touching them makes sure cargo sees them as newer than the stubs
# whatever mtimes the build context carried.
COPY build.rs ./
COPY proto ./proto
COPY src ./src
COPY benches ./benches
RUN touch build.rs src/main.rs src/lib.rs \
    && cargo build --release --locked --bin tessera \
    && install -D -m 0755 target/release/tessera /out/tessera \
    && install -d -m 0750 /out/var/lib/tessera

FROM debian:bookworm-20260824-slim@sha256:88200866dfff7ea7f5cbcb6ec7c8a701889efe6fe859fe64d6990e4b07ea4171

# A fixed numeric uid/gid, so Kubernetes' runAsUser/runAsGroup/fsGroup (10001) and file
# ownership on volumes agree with the image. No home dir, no login shell.
RUN groupadd --system --gid 10001 tessera \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/tessera --shell /usr/sbin/nologin tessera

COPY --from=build /out/tessera /usr/local/bin/tessera
# The volume root belongs to the service user; the data dir is a subdirectory that
# tessera creates 0700 itself (a group-writable dir, as a volume root often is under
# Kubernetes fsGroup, is refused as a data dir).
COPY --from=build --chown=10001:10001 /out/var/lib/tessera /var/lib/tessera

# The image default is the binary's own default: listeners on loopback, where a
# development master key is allowed. That starts and serves inside the container (e.g.
# for `docker exec … tessera …`) but is not reachable from outside. To publish it, bind
# 0.0.0.0 and give a master key file, as k8s/ does: a non-loopback listener without a
# master key is refused (exit 64), because the development key would sit on the volume
# beside the database it protects. README "Container image" has the command.
ENV TESSERA_DATA_DIR=/var/lib/tessera/data
WORKDIR /var/lib/tessera
VOLUME ["/var/lib/tessera"]

USER 10001:10001
# gRPC, HTTP (JWKS, OAuth, /healthz, /readyz), Prometheus /metrics.
EXPOSE 50051 8080 9464
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["serve"]
