# syntax=docker/dockerfile:1
# The meshmig operator image: a static (musl) meshmig-operator on distroless/static,
# running as the non-root user 65532. Built in CI (no container engine is needed to develop
# or test meshmig); see docs/install.md.
#
#   docker build -t ghcr.io/meshmig/meshmig-operator:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... --push .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
# musl-dev: the C runtime for ring (rustls). On Alpine the host target is *-linux-musl and
# binaries are statically linked.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p meshmig-operator \
 && cp target/release/meshmig-operator /meshmig-operator \
 && /meshmig-operator --version

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="meshmig-operator" \
      org.opencontainers.image.description="Migrates Istio workloads from sidecar to ambient mode" \
      org.opencontainers.image.source="https://github.com/meshmig/meshmig" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /meshmig-operator /usr/local/bin/meshmig-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/meshmig-operator"]
