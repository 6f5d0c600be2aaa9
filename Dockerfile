# syntax=docker/dockerfile:1
#
# sidecache container image.
#
# Build (from the repository root):
#   docker build -t sidecache .
#
# Run next to the API (the upstream named "backend" in the example config; adjust the name to yours):
#   docker run -d --name sidecache -p 8080:8080 --stop-timeout 15 \
#     -e SIDECACHE_UPSTREAM_BACKEND=api.internal:5000 \
#     -e SIDECACHE_REDIS_URL=redis://redis:6379/0 \
#     sidecache
#
# Use your own config by mounting it over the baked-in one (validate it first):
#   docker run --rm -v "$PWD/config/sidecache.toml:/etc/sidecache/sidecache.toml:ro" sidecache check --config /etc/sidecache/sidecache.toml
#   docker run -d --name sidecache -p 8080:8080 --stop-timeout 15 \
#     -v "$PWD/config/sidecache.toml:/etc/sidecache/sidecache.toml:ro" sidecache
#
# The admin listener (metrics, purge, reload) stays on 127.0.0.1:9091 inside the container
# unless you expose it, which requires a token:
#   -p 9091:9091 -e SIDECACHE_ADMIN_LISTEN=0.0.0.0:9091 -e SIDECACHE_ADMIN_TOKEN=<secret>
#
# `docker stop` sends SIGTERM; sidecache drains for server.grace_period (10 s by default),
# hence --stop-timeout 15. `docker kill -s HUP sidecache` reloads the config.

FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -m 0755 target/release/sidecache /usr/local/bin/sidecache

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin sidecache
COPY --from=builder /usr/local/bin/sidecache /usr/local/bin/sidecache
COPY config/sidecache.toml /etc/sidecache/sidecache.toml
ENV SIDECACHE_CONFIG=/etc/sidecache/sidecache.toml \
    SIDECACHE_LISTEN=0.0.0.0:8080
USER sidecache
EXPOSE 8080 9091
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["sidecache"]
