# tailbridge container image.
#   docker build -t tailbridge .
# The default build covers tailnet modes direct and socks5. The runtime image is distroless
# (no shell, no curl), runs as non-root, and works with a read-only root filesystem: the
# health check uses `tailbridge healthcheck`.

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin tailbridge

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tailbridge /usr/local/bin/tailbridge
COPY conf/minimal.yaml /etc/tailbridge/config.yaml
USER nonroot:nonroot
# Node state (tsnet mode) and ACME data live here.
VOLUME ["/var/lib/tailbridge"]
EXPOSE 8900 9090
ENV RUST_LOG=info
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/tailbridge", "healthcheck", "--url", "http://127.0.0.1:9090/healthz"]
ENTRYPOINT ["/usr/local/bin/tailbridge"]
CMD ["--config", "/etc/tailbridge/config.yaml"]
