# syntax=docker/dockerfile:1
# teleport-mattermost: the operator image.
#
#   docker build -t teleport-mattermost:dev .
#   docker run --rm teleport-mattermost:dev version
#
# Two stages: cargo in a pinned Rust image, then the one static-enough binary on distroless
# (glibc, CA certificates, no shell, UID 65532). tests/chart.rs checks that the cargo command
# below is the one CI runs, and hadolint lints this file.

# Base images are spelt out (not ARGs) so hadolint can check them against trustedRegistries.
FROM docker.io/library/rust:1.95.0-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: only the manifests, the lock file, build.rs and the
# protos it compiles, with empty targets, so editing our sources does not rebuild the
# dependency tree. The benches are copied as they are: every [[bench]] in Cargo.toml must
# exist for cargo to read the manifest, and copying them all means a new one cannot be
# forgotten here (tests/dockerfile.rs replays this stage).
COPY Cargo.toml Cargo.lock build.rs ./
COPY testkit/Cargo.toml testkit/Cargo.toml
COPY proto proto
COPY benches benches
RUN mkdir -p src testkit/src/bin \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs testkit/src/lib.rs \
    && echo 'fn main() {}' > testkit/src/bin/sandbox.rs \
    && cargo build --release --locked --bin teleport-mattermost \
    && rm -rf src target/release/teleport-mattermost* target/release/deps/teleport_mattermost* \
        target/release/.fingerprint/teleport-mattermost-*

# Our sources. COPY keeps the files' mtimes, which are newer than the dummies, so cargo
# rebuilds just this crate.
COPY src src
RUN cargo build --release --locked --bin teleport-mattermost \
    && install -D -m 0755 target/release/teleport-mattermost /out/teleport-mattermost

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.2.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="teleport-mattermost" \
      org.opencontainers.image.description="Kubernetes operator posting Teleport access requests to Mattermost with Approve/Deny buttons" \
      org.opencontainers.image.source="https://github.com/teleport-mattermost/teleport-mattermost" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/teleport-mattermost /teleport-mattermost
USER 65532:65532
# 8080: button callbacks; 9090: /healthz, /readyz, /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["/teleport-mattermost"]
CMD ["operator"]
