# planrun: the two commands a newcomer needs are `make demo` and `make test`.
GO        ?= go
# FUZZTIME is the total of a fuzz run, shared by every fuzz target (hack/fuzz.sh).
FUZZTIME  ?= 30s
BENCHTIME ?= 1s
# The cluster binaries are built from Go modules into a cache outside the repo; the script prints
# the folder, which envtest and internal/controlplane read from KUBEBUILDER_ASSETS.
ASSETS = $(shell hack/build-control-plane.sh kube-apiserver etcd kubectl kube-controller-manager kube-scheduler kubelet)
# The S3 server of object-storage tests (versitygw), built the same way; the script prints the
# binary's path, which internal/s3test reads from PLANRUN_S3_SERVER.
S3_SERVER = $(shell hack/build-s3-server.sh)
# What `planrun version` prints; the planrun image (hack/images) stamps the same two.
VERSION = $(shell git describe --always --dirty 2>/dev/null)
COMMIT  = $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS = -X planrun.dev/planrun/internal/version.Version=$(VERSION) -X planrun.dev/planrun/internal/version.Commit=$(COMMIT)
# Image tarballs for a test node's containerd (hack/images), outside the repo like the binaries.
IMAGES_DIR = $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/planrun/images

.PHONY: all build demo test unit fuzz bench controlplane s3-server node-deps browser image images vet fmt-check schema clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/planrun ./cmd/planrun

## demo: start a local control plane, apply plans/hello-cluster.yaml and run the Service Catalog migration plan on it
demo: node-deps
	hack/demo.sh

## test: everything — format, vet, unit, real-control-plane and real-S3-server tests, a short fuzz run
test: fmt-check vet node-deps browser
	KUBEBUILDER_ASSETS="$(ASSETS)" PLANRUN_S3_SERVER="$(S3_SERVER)" $(GO) test -count=1 -timeout 45m ./...
	GO=$(GO) FUZZTIME=$(FUZZTIME) hack/fuzz.sh

## unit: the tests that need no control plane
unit:
	PLANRUN_SKIP_CONTROLPLANE=1 $(GO) test -count=1 ./...

## fuzz: every fuzz target for a share of FUZZTIME, with the number of inputs each ran
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) hack/fuzz.sh

## bench: benchmarks (figures, never timed assertions)
bench:
	PLANRUN_S3_SERVER="$(S3_SERVER)" BENCHTIME=$(BENCHTIME) hack/bench.sh

controlplane:
	@echo "$(ASSETS)"

s3-server:
	@echo "$(S3_SERVER)"

## node-deps: the Debian packages a local node needs (containerd, runc, CNI plugins, busybox-static, iproute2); idempotent
node-deps:
	@hack/install-node-deps.sh

## browser: Debian's Chromium, which the console's browser tests drive headless; idempotent
browser:
	@hack/install-browser.sh

## image: the planrun image tarball (ctr -n k8s.io images import FILE); prints its path
image:
	@$(GO) -C hack/images run . -out "$(IMAGES_DIR)" planrun

## images: the busybox, pause and planrun image tarballs; prints their paths
images:
	@$(GO) -C hack/images run . -out "$(IMAGES_DIR)"

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## schema: regenerate schemas/plan.schema.json from the Go types
schema:
	$(GO) test ./schemas -run TestSchemaUpToDate -update

clean:
	rm -rf bin .planrun
