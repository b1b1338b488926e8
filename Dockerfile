# syntax=docker/dockerfile:1
# Multi-stage build: a static binary on a distroless base, running as non-root.

FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
ARG REVISION=unknown
WORKDIR /src
# Dependencies first, so source edits do not invalidate the module cache layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=${VERSION} -X github.com/prometheus/common/version.Revision=${REVISION}" \
      -o /out/sidecar ./cmd/sidecar

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="tasker-sidecar" \
      org.opencontainers.image.description="Observability sidecar for the Tasker workflow engine" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/sidecar /usr/local/bin/sidecar
COPY config.example.yaml /etc/tasker-sidecar/config.example.yaml
USER 65532:65532
EXPOSE 9394
ENTRYPOINT ["/usr/local/bin/sidecar"]
CMD ["run"]
