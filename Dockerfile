# Builds the image the manifests in k8s/ run.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --uid 10001 --no-create-home tessera
COPY --from=build /src/target/release/tessera /usr/local/bin/tessera
USER 10001
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["serve"]
