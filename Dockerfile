# tailbridge container image, with the embedded tailnet node (tsnet mode).
#   docker build -t tailbridge .
#   docker build --build-arg FEATURES= -t tailbridge:host-tailnet .   # without tsnet (no Go needed)
# libtailscale is Go code: its build (run by libtailscale-sys' build script) needs a Go
# toolchain and Go module downloads, which the build stage gets from the official Go image.
# The runtime image is distroless (no shell, no curl), runs as non-root, works with a
# read-only root filesystem, and keeps node state in a volume.

FROM golang:1.24-bookworm AS go

FROM rust:1-bookworm AS build
ARG FEATURES=tailscale
COPY --from=go /usr/local/go /usr/local/go
ENV PATH=/usr/local/go/bin:$PATH CGO_ENABLED=1
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY testing ./testing
RUN cargo build --release --locked --bin tailbridge --features "$FEATURES" \
 && strip target/release/tailbridge

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tailbridge /usr/local/bin/tailbridge
COPY conf/minimal.yaml /etc/tailbridge/config.yaml
USER nonroot:nonroot
# tsnet node state (tailnet.state_dir: /var/lib/tailbridge/tsnet) and ACME account and
# certificates (tls.acme.storage_dir: /var/lib/tailbridge/acme).
VOLUME ["/var/lib/tailbridge"]
# 8900: default plain listener; 8443/8080: TLS and HTTP listeners of the ACME setup; 9090: admin.
EXPOSE 8900 8443 8080 9090
ENV RUST_LOG=info
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/tailbridge", "healthcheck", "--url", "http://127.0.0.1:9090/healthz"]
ENTRYPOINT ["/usr/local/bin/tailbridge"]
CMD ["--config", "/etc/tailbridge/config.yaml"]
