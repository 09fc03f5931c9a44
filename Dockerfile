# syntax=docker/dockerfile:1
# The controller image: the release binaries built with a pinned Rust
# toolchain, on a distroless runtime (glibc, CA certificates, no shell),
# running as uid 999. docs/install.md shows how to build it and point the
# manifests at it:
#
#   docker build -t registry.example.com/rollouts-controller:v0.1.0 .

# The toolchain the project is built and tested with (Cargo.toml's
# rust-version is the minimum).
ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
# jemalloc (the controller's allocator) is built from C sources with make.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The cache mounts keep the crates and the target directory between builds;
# the binaries are copied out in the same step, since the mount is gone after.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin rollouts-controller --bin kubectl-rollouts \
 && mkdir -p /out \
 && cp target/release/rollouts-controller target/release/kubectl-rollouts /out/

# bookworm's glibc, like the build stage; CA certificates for the web and
# Prometheus analysis providers.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/rollouts-controller /out/kubectl-rollouts /usr/local/bin/
USER 999:999
# The manifests' ports: metrics and health.
EXPOSE 8090 8080
ENTRYPOINT ["/usr/local/bin/rollouts-controller"]
