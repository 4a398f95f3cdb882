# syntax=docker/dockerfile:1
# Multi-stage build: a release binary on a slim Debian base, run as a non-root user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them (.cargo/config.toml carries the
# compile-time options of the bundled SQLite).
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > benches/mapping.rs \
    && cargo build --release --locked --bin genesys-gateway
COPY . .
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin genesys-gateway

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/genesys-gateway --create-home gateway
COPY --from=build /src/target/release/genesys-gateway /usr/local/bin/genesys-gateway
COPY config /etc/genesys-gateway
# The store path in the shipped configs is relative to the config folder (data/).
RUN mkdir -p /etc/genesys-gateway/data && chown -R gateway:gateway /etc/genesys-gateway/data
USER gateway
ENV GATEWAY_CONFIG=/etc/genesys-gateway/gateway.toml \
    GATEWAY_SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["genesys-gateway"]
CMD ["serve"]
