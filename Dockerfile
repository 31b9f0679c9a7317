# One image for the whole tracelab workspace: every service binary plus the
# `tracelab` CLI. docker-compose.yml runs it once per service with a different
# command (gateway, auth, search, payment, payment-provider, notification,
# tracelab ...).
#
#   docker build -t tracelab:dev .
#   docker run --rm tracelab:dev tracelab --help
#
# Builds natively on linux/amd64 and linux/arm64 (Apple Silicon): nothing below
# names an architecture, and the Rust and Debian images are multi-arch.
#
# Dependency caching without extra tools: the `skeleton` stage copies every
# Cargo.toml, Cargo.lock and build.rs and replaces every other .rs file with a
# stub. Its output only changes when manifests change, so the dependency build
# in the `builder` stage stays a cached layer across source edits; only the
# workspace's own crates are rebuilt.

# Builder and runtime are both Debian 13 "trixie", so the binaries' glibc matches.
FROM rust:1.95.0-slim-trixie AS skeleton
WORKDIR /src
COPY . .
# Manifests and build scripts as they are; every other .rs file becomes a stub
# that compiles as a library root, a module or a binary root.
RUN set -eu; \
    mkdir -p /skeleton; \
    find . -type f \( -name Cargo.toml -o -name Cargo.lock -o -name build.rs \
        -o -name 'rust-toolchain*' -o -path './.cargo/config*' \) -print \
      | while read -r f; do mkdir -p "/skeleton/$(dirname "$f")"; cp "$f" "/skeleton/$f"; done; \
    find . -type f -name '*.rs' ! -name build.rs -print \
      | while read -r f; do mkdir -p "/skeleton/$(dirname "$f")"; \
          echo '#[allow(dead_code)] fn main() {}' > "/skeleton/$f"; done

FROM rust:1.95.0-slim-trixie AS builder
WORKDIR /src
# 1. Dependencies only (cached until a Cargo.toml or Cargo.lock changes).
COPY --from=skeleton /skeleton/ ./
RUN cargo build --release --locked --workspace --bins
# 2. The real sources. COPY keeps the files' original mtimes, which can be older
#    than the stub build, so touch them or cargo would keep the stub binaries.
COPY . .
RUN find . -path ./target -prune -o -type f -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --workspace --bins

FROM debian:13-slim AS runtime
# A fixed non-root user; no shell login, no home.
RUN groupadd --system --gid 10001 tracelab \
 && useradd --system --uid 10001 --gid tracelab --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin tracelab
COPY --from=builder \
    /src/target/release/gateway \
    /src/target/release/auth \
    /src/target/release/search \
    /src/target/release/payment \
    /src/target/release/payment-provider \
    /src/target/release/notification \
    /src/target/release/tracelab \
    /usr/local/bin/
# Default sampling policy; docker-compose.yml bind-mounts the repo's copy over it
# so an edit needs only a restart, not a rebuild.
COPY sampling.yaml /etc/tracelab/sampling.yaml
# The scenario catalog, for `tracelab scenario` and `tracelab exercise` in a
# container (TRACELAB_SCENARIOS points here in docker-compose.yml).
COPY scenarios /etc/tracelab/scenarios
ENV TRACELAB_SAMPLING_FILE=/etc/tracelab/sampling.yaml
# Where compose's admin-token volume is mounted: owned by the runtime user, so
# a fresh volume (Docker copies this directory's owner and mode into it) lets
# admin-token-init, running as that user, write the token there.
RUN mkdir -p /var/lib/tracelab-admin \
 && chown 10001:10001 /var/lib/tracelab-admin \
 && chmod 0700 /var/lib/tracelab-admin
# The console's state (TRACELAB_HOME: the exercise and its history), where
# compose's console-state volume is mounted: owned by the runtime user for
# the same reason.
RUN mkdir -p /var/lib/tracelab \
 && chmod 0700 /var/lib/tracelab \
 && chown 10001:10001 /var/lib/tracelab
USER 10001:10001
WORKDIR /tmp
# No curl in the image: the CLI probes the service's own /health (2xx = healthy).
# The port comes from TRACELAB_LISTEN (e.g. 0.0.0.0:8083 -> 8083).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/bin/sh", "-c", "listen=\"${TRACELAB_LISTEN:-127.0.0.1:8080}\"; exec tracelab health \"http://127.0.0.1:${listen##*:}/health\""]
CMD ["gateway"]
