# Slipway. Every target installs or builds what it needs (see hack/).
SHELL := /usr/bin/env bash
GO ?= go
BIN ?= $(CURDIR)/bin
# The cache of costly binaries (etcd, kube-apiserver, ...), reused when present.
SLIPWAY_CACHE ?= $(HOME)/.cache/slipway
export SLIPWAY_CACHE

.PHONY: all build test test-unit bench generate manifests verify demo fmt vet clean

all: build

## build: the executor and the manager binaries, in bin/.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/executor ./executor
	@if [ -f main.go ]; then CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/manager . ; fi

## demo: the main job: a real build of examples/hello into a local registry.
demo:
	hack/demo.sh

## test: everything CI runs (installs Debian packages, builds the test binaries it needs).
test:
	hack/test.sh

## test-unit: go test without the costly set-up (tests that need a missing tool fail and say which).
test-unit:
	$(GO) test ./...

## bench: side-by-side benchmarks against the peers.
bench:
	hack/bench.sh

## generate: deepcopy code from the API types.
generate:
	hack/generate.sh generate

## manifests: CRD, RBAC and webhook manifests from the markers.
manifests:
	hack/generate.sh manifests

## verify: regenerate, format and vet; fails on any difference.
verify: generate manifests fmt vet
	git diff --exit-code -- api config charts
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
