# syntax=docker/dockerfile:1
# Multi-stage build: a static binary on a distroless base, running as non-root.
#
# Build with BuildKit (the default `docker build` since Docker 23, `docker buildx build`, podman/buildah):
#   docker build -t tasker-sidecar .                              # the builder's own platform
#   docker build --platform linux/arm64 -t tasker-sidecar .       # another platform, cross-compiled
#   docker buildx build --platform linux/amd64,linux/arm64 --push -t REGISTRY/tasker-sidecar:TAG .
# `make docker` passes the version, revision and creation time for the labels (see docs/operations.md).
#
# Base images are fully qualified, so podman and buildah find them without search registries. They are
# build arguments so that a release can pin them by digest without editing this file:
#   --build-arg GO_IMAGE=docker.io/library/golang:1.26-bookworm@sha256:<digest>
# (`make docker GO_IMAGE=… RUNTIME_IMAGE=…`). The defaults below are tags: the digests could not be
# resolved where this file was written (no registry access), and a digest is not something to guess.
ARG GO_IMAGE=docker.io/library/golang:1.26-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot
# Declared without a value: BuildKit sets it to the platform of the machine running the build. The
# legacy builder (DOCKER_BUILDKIT=0) sets nothing; pass it yourself, see the check below.
ARG BUILDPLATFORM

# The Go toolchain always runs natively and cross-compiles (CGO_ENABLED=0), so an arm64 image built on
# an x86-64 machine needs no emulation.
FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
# No default values: BuildKit fills these from --platform, but a value written here would win over it
# and every image would carry an x86-64 binary whatever platform it claims.
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=
# The legacy builder leaves the platform arguments empty; stop with the way out rather than guess a
# platform the final stage might not have.
RUN if [ -z "$TARGETOS" ] || [ -z "$TARGETARCH" ]; then \
      echo "TARGETOS/TARGETARCH are empty: this Dockerfile needs BuildKit (docker build with buildx, or docker buildx build)." >&2; \
      echo "Without BuildKit pass them: --build-arg BUILDPLATFORM=linux/amd64 --build-arg TARGETOS=linux --build-arg TARGETARCH=amd64" >&2; \
      exit 1; \
    fi
WORKDIR /src
# Dependencies first, so source edits do not invalidate the module cache layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=${VERSION} -X github.com/prometheus/common/version.Revision=${REVISION} -X github.com/prometheus/common/version.BuildDate=${CREATED}" \
      -o /out/sidecar ./cmd/sidecar

FROM ${RUNTIME_IMAGE}
# Filled by `make docker`; the defaults mark a build made without it.
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=
ARG SOURCE=https://github.com/tasker-systems/tasker-sidecar
LABEL org.opencontainers.image.title="tasker-sidecar" \
      org.opencontainers.image.description="Observability sidecar for the Tasker workflow engine" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/sidecar /usr/local/bin/sidecar
COPY LICENSE /usr/share/doc/tasker-sidecar/LICENSE
COPY config.example.yaml /etc/tasker-sidecar/config.example.yaml
USER 65532:65532
EXPOSE 9394
ENTRYPOINT ["/usr/local/bin/sidecar"]
CMD ["run"]
