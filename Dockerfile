# syntax=docker/dockerfile:1
#
# The Arbor sync server (`arbor-server serve`) as a container image.
#
#   docker build -t arbor-server .
#   docker run ... arbor-server          (full example: docs/DEPLOY.md)
#
# Only `serve` (and `token`) are meant for this image: `arbor-server dev`
# starts its own Postgres from the Debian postgresql binaries, which the
# runtime image does not contain.

# ---------------------------------------------------------------- builder
FROM rust:1-bookworm AS builder
WORKDIR /src

# The whole workspace goes in (minus .dockerignore): cargo reads every
# member's manifest and its declared test/bench targets, sync-server embeds
# ../migrations/*.sql with include_str!, and it links arbor-testkit. So a
# "manifests first, sources later" layer split would need stub files for
# every target; instead BuildKit cache mounts keep the crate registry and the
# target directory between builds, so a source change recompiles only the
# workspace crates, not the dependencies.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p arbor-sync-server --bin arbor-server \
 && install -D -m 0755 target/release/arbor-server /out/arbor-server

# ---------------------------------------------------------------- runtime
FROM debian:bookworm-slim

# curl is for the HEALTHCHECK only. (The server itself makes no outbound TLS
# connections; it connects to Postgres without TLS.)
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 arbor \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin arbor

COPY --from=builder /out/arbor-server /usr/local/bin/arbor-server

# The binary's defaults are 127.0.0.1:8080 and 127.0.0.1:9090, unreachable
# from outside a container; listen on every interface here instead. Publish
# the admin port privately only: /metrics has no authentication.
ENV ARBOR_LISTEN=0.0.0.0:8080 \
    ARBOR_ADMIN_LISTEN=0.0.0.0:9090

USER 10001:10001
# 8080: API and WebSocket (plain HTTP/1.1; terminate TLS in front).
# 9090: admin listener (/metrics, /livez, /readyz).
EXPOSE 8080 9090

# Health: /livez, not /readyz. Docker's health status acts as liveness
# (Swarm replaces unhealthy tasks; plain Docker only reports it). /readyz
# answers 503 whenever Postgres is unreachable, so using it here would mark
# (and under Swarm restart) every replica during a database outage, which a
# restart cannot fix; and during shutdown the process is exiting anyway.
# /livez answers 200 whenever the API listener serves requests. Point the load
# balancer's or orchestrator's readiness check at /readyz instead.
# The port follows ARBOR_LISTEN (this must be a wildcard or loopback address).
# The start period covers migrations, which run before the first request is
# answered.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${ARBOR_LISTEN##*:}/livez" || exit 1

# SIGTERM starts the drain (ARBOR_DRAIN_S, default 10 s). Docker's default
# stop timeout is also 10 s: run with --stop-timeout 30 (or
# `docker stop -t 30`, compose stop_grace_period: 30s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["arbor-server"]
CMD ["serve"]
