# tasker-sidecar. `make help` lists the targets.

BINARY      := bin/sidecar
PKG         := github.com/tasker-systems/tasker-sidecar
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BRANCH      ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -s -w \
	-X github.com/prometheus/common/version.Version=$(VERSION) \
	-X github.com/prometheus/common/version.Revision=$(REVISION) \
	-X github.com/prometheus/common/version.Branch=$(BRANCH) \
	-X github.com/prometheus/common/version.BuildDate=$(shell date -u +%Y%m%d-%H:%M:%S)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
ENGINE      ?= rails
DEMO_DB     ?= postgres://postgres@127.0.0.1:5432/tasker_demo$(if $(filter core,$(ENGINE)),_core,)?sslmode=disable
GOTESTFLAGS ?=

.PHONY: help build test test-unit services demo lint fmt-check tidy-check vet bench docker clean fuzz

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/sidecar (static)
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BINARY) ./cmd/sidecar

services: ## install and start PostgreSQL, Redis, Memcached and promtool if missing (idempotent)
	./scripts/services.sh

test: services ## start the services the tests need, then run every test with -race
	go test -race -count=1 $(GOTESTFLAGS) ./...

demo: build ## run the sidecar on a live demo workload (in-process cache); ENGINE=core for tasker-core
	./scripts/services.sh postgres
	./$(BINARY) demo --engine '$(ENGINE)' --database-url '$(DEMO_DB)'

lint: fmt-check vet ## gofmt, go vet and staticcheck
	go run $(STATICCHECK) ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet: ## go vet, also the end-to-end tests that only build with -tags e2e
	go vet ./...
	go vet -tags e2e ./...

tidy-check: ## go.mod and go.sum are tidy
	go mod tidy && git diff --exit-code go.mod go.sum

fuzz: ## run every Go fuzz test briefly from its committed corpus (FUZZTIME=5s each)
	./scripts/fuzz.sh

bench: services ## run the Go benchmarks (see docs/benchmarks.md for the database-size runs)
	go test -run '^$$' -bench . -benchmem ./...

# The container image. Base images are tags until pinned: give the digest after the tag
# (GO_IMAGE=docker.io/library/golang:1.26-bookworm@sha256:…); the defaults repeat the Dockerfile's.
# PLATFORM builds for another platform (linux/arm64); a list (linux/amd64,linux/arm64) needs a builder
# that can hold it, so add DOCKER_BUILD_FLAGS=--push with IMAGE naming a registry.
IMAGE              ?= tasker-sidecar
GO_IMAGE           ?= docker.io/library/golang:1.26-bookworm
RUNTIME_IMAGE      ?= gcr.io/distroless/static-debian12:nonroot
PLATFORM           ?=
IMAGE_CREATED      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
IMAGE_SOURCE       ?= https://github.com/tasker-systems/tasker-sidecar
DOCKER_BUILD_FLAGS ?=

docker: ## build the container image (BuildKit; PLATFORM=linux/arm64, GO_IMAGE/RUNTIME_IMAGE to pin)
	docker build -t $(IMAGE):$(VERSION) $(if $(PLATFORM),--platform $(PLATFORM)) \
		--build-arg GO_IMAGE=$(GO_IMAGE) --build-arg RUNTIME_IMAGE=$(RUNTIME_IMAGE) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--build-arg CREATED=$(IMAGE_CREATED) --build-arg SOURCE=$(IMAGE_SOURCE) \
		$(DOCKER_BUILD_FLAGS) .

clean:
	rm -rf bin

.PHONY: dashboards e2e-prometheus check-rules

dashboards: ## regenerate grafana/dashboards/*.json, the chart's files/ and the Kustomize manifests (builds helm once)
	go run ./dashboards/cmd/generate
	./scripts/manifests.sh

e2e-prometheus: services ## real Prometheus scraping a real sidecar: every panel returns data, every rule evaluates
	go test -race -count=1 -run '^TestPrometheusEndToEnd$$' -v ./dashboards/

check-rules: ## promtool check rules and promtool test rules on deploy/prometheus
	./scripts/services.sh promtool
	promtool check rules deploy/prometheus/tasker-sidecar.rules.yaml
	promtool test rules deploy/prometheus/tests/*.test.yaml

.PHONY: check-rules-3

check-rules-3: ## the same under Prometheus 3.x: builds its promtool into .cache/ (once)
	./scripts/promtool3.sh

.PHONY: e2e-jaeger

e2e-jaeger: services ## build Jaeger v2 into .cache/ (once) and check a simulated task's trace in it, over OTLP HTTP and gRPC
	./scripts/e2e-jaeger.sh

.PHONY: helm manifests check-helm

helm: ## build the helm CLI from its Go module into .cache/helm/ (once) and print its path
	./scripts/helm.sh

manifests: ## render deploy/kubernetes/*.yaml from the Helm chart with deploy/helm/kustomize.values.yaml
	./scripts/manifests.sh

check-helm: ## helm lint and helm template with several value sets, objects checked against the API types, Kustomize manifests current
	./scripts/check-helm.sh

.PHONY: e2e-browser e2e-pgmq e2e-idle series-count

e2e-browser: ## the front page in Debian's headless chromium (installed if missing): every link answers; writes docs/front-page.png
	./scripts/e2e-browser.sh

e2e-pgmq: ## the tasker-core queue figures against PGMQ's own SQL: PGMQ_SQL=path/to/pgmq.sql (see the script)
	./scripts/e2e-pgmq.sh

e2e-idle: services ## real Prometheus on a quiet sidecar, both engines: share of panel queries with data, why the rest are empty
	go test -tags e2e -count=1 -run '^TestPrometheusIdle$$' -v ./dashboards/

series-count: services ## series per replica up to the label cap, both engines (docs/operations.md, Sizing)
	go test -tags e2e -count=1 -run '^TestSeriesPerReplica$$' -v ./dashboards/
