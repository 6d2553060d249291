# Slipway. Every target installs or builds what it needs (see hack/).
SHELL := /usr/bin/env bash
GO ?= go
BIN ?= $(CURDIR)/bin
# The cache of costly binaries (etcd, kube-apiserver, ...), reused when present.
SLIPWAY_CACHE ?= $(HOME)/.cache/slipway
export SLIPWAY_CACHE
# helm, built from its Go module by hack/tools/helm/build.sh (`make helm`) into the cache.
HELM := $(SLIPWAY_CACHE)/bin/helm

.PHONY: all build test test-unit test-e2e conformance fuzz bench bench-load generate manifests verify demo demo-local fmt vet clean images chart helm verify-chart

all: build

## build: the executor and the manager binaries, in bin/.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/executor ./executor
	@if [ -f main.go ]; then CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/manager . ; fi

## demo: the main job: the local cluster, the chart, and an ImageBuild of examples/hello built in it.
demo:
	hack/demo.sh

## demo-local: the executor alone on this machine: examples/hello built into a local registry.
demo-local:
	hack/demo-local.sh

## test: everything CI runs (installs Debian packages, builds the test binaries it needs).
test:
	hack/test.sh

## test-e2e: test/e2e on the local cluster through the Helm-installed manager; takes the cluster down after.
test-e2e:
	hack/e2e.sh

## test-unit: go test without the costly set-up (tests that need a missing tool fail and say which).
test-unit:
	$(GO) test ./...

## conformance: the suite ported from BuildKit's Dockerfile tests; prints passing / ported and what is left.
conformance:
	hack/conformance.sh

## fuzz: every fuzz target for FUZZTIME each (default 5m; make test runs them for 10 s).
FUZZTIME ?= 5m
fuzz:
	hack/fuzz.sh $(FUZZTIME)

## bench: side-by-side benchmarks against the peers.
bench:
	hack/bench.sh

## bench-load: 500 ImageBuilds through the manager on the local cluster (BENCH_LOAD_N to change);
## fails on a lost, failed or twice-built build, RSS >= 200 MB or a reconcile hot loop. Then
## 200 ImageBuilds following one repository (envtest): the listings per interval.
bench-load:
	hack/loadbench.sh
	eval "$$(hack/envtest.sh)" && SLIPWAY_BENCH=1 go test ./controllers/ -run '^TestPollingLoad$$' -count=1 -v -timeout 15m

## generate: deepcopy code from the API types.
generate:
	hack/generate.sh generate

## manifests: CRD, RBAC and webhook manifests from the markers.
manifests:
	hack/generate.sh manifests
	cp config/crd/bases/*.yaml charts/slipway/crds/
	cp config/rbac/role.yaml charts/slipway/files/manager-role.yaml

## images: the executor and manager images, built by the executor (hack/images.sh);
## REGISTRY=HOST:PORT pushes them, otherwise tarballs in IMAGES_DIR (default _output/images).
images:
	hack/images.sh $(if $(REGISTRY),--registry $(REGISTRY),--tar $(or $(IMAGES_DIR),_output/images))

## helm: helm from its Go module (hack/tools/helm), cached in $(SLIPWAY_CACHE)/bin.
helm:
	@hack/tools/helm/build.sh >/dev/null

## chart: helm lint and helm template of charts/slipway (go test ./test/chart checks what it renders).
chart: helm verify-chart
	$(HELM) lint --strict charts/slipway
	$(HELM) template slipway charts/slipway --namespace slipway-system >/dev/null

## verify-chart: the chart's CRDs and manager rules are config/'s generated files (make manifests copies them).
verify-chart:
	@diff -ru config/crd/bases charts/slipway/crds || { echo "charts/slipway/crds differs from config/crd/bases: run make manifests" >&2; exit 1; }
	@diff -u config/rbac/role.yaml charts/slipway/files/manager-role.yaml || { echo "charts/slipway/files/manager-role.yaml differs from config/rbac/role.yaml: run make manifests" >&2; exit 1; }

## verify: fails on unformatted Go code (it does not format), go vet findings, stale generated
## files (regenerated in place to review), chart copies that differ from config/, and shellcheck
## findings in any shell script (hack/verify.sh). make test runs it.
verify:
	hack/verify.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
