# syntax=docker/dockerfile:1
#
# stint broker image: a glibc binary on distroless, run as the fixed
# non-root user 65532. Build with BuildKit (the default builder since
# Docker 23):
#
#   docker build -t stint:0.1.0 --build-arg VERSION=0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" .
#
# docs/operations.md explains how to run it (ports, volumes, keys, signals).

# ---------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------
# The crate needs Rust 1.95 (edition 2024). The full (non-slim) image has the
# C toolchain the bundled C code needs: gcc and libc headers. aws-lc-sys
# 0.47 (Cargo.lock) builds AWS-LC with the `cc` crate and its pregenerated
# bindings on x86_64 and aarch64 Linux, so no cmake, clang, nasm, Go or
# bindgen is required; rusqlite's bundled SQLite also builds with `cc`.
FROM rust:1.95-bookworm AS build

WORKDIR /src

# Always build AWS-LC from the bundled source: never adopt a system library
# that pkg-config or OPENSSL_* variables might point at.
ENV AWS_LC_SYS_USE_SYSTEM=0 \
    CARGO_TERM_COLOR=never

# Only what the build reads. benches/ is there because Cargo.toml declares
# [[bench]] targets, whose files cargo looks for when it reads the manifest.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches

# The cargo registry and the target folder live in BuildKit cache mounts:
# a rebuild after a source change recompiles stint only, not its
# dependencies. The binary is copied out of the cache mount in the same
# step, since the mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin stint \
    && install -D -m 0755 target/release/stint /out/bin/stint \
    && install -d -m 0700 /out/state/stint

# ---------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------
# distroless/cc: glibc, libgcc_s and the CA certificates in /etc/ssl/certs
# (the system trust store stint's TLS clients use for OIDC issuers, AWS and
# PostgreSQL targets); no shell, no package manager. Pin it by digest in
# production (gcr.io/distroless/cc-debian12:nonroot@sha256:...).
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="stint" \
      org.opencontainers.image.description="Short-lived secrets broker: OIDC token in, policy-checked, audited, expiring credential out" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build /out/bin/stint /usr/local/bin/stint

# /var/lib/stint: the default place of the SQLite audit store and the key
# files, owned by the runtime user (mode 0700), so that a volume mounted
# there is writable without running as root.
COPY --from=build --chown=65532:65532 /out/state/ /var/lib/

WORKDIR /var/lib/stint

# The config's default listeners are on 127.0.0.1, which nothing outside the
# container can reach. These override `listen` and `admin_listen` of the
# file (docs/configuration.md#environment-overrides); set them again to move
# a port. Keep the admin port (9420) unpublished: it has no authentication.
ENV STINT_LISTEN=0.0.0.0:8420 \
    STINT_ADMIN_LISTEN=0.0.0.0:9420 \
    STINT_CONFIG=/etc/stint/stint.yaml \
    STINT_LOG_FORMAT=json

USER 65532:65532

# 8420: public API (/v1/*, /.well-known/*). 9420: admin (/healthz, /readyz, /metrics).
EXPOSE 8420 9420

ENTRYPOINT ["/usr/local/bin/stint"]
CMD ["serve", "--config", "/etc/stint/stint.yaml"]
