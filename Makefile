# cerbai: `make demo` runs the proxy against a built-in demo, `make test`
# runs every test. See README.md.

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(DATE)
GO      ?= go
BIN     := bin/cerbai
LOAD    := $(GO) run ./integration/cmd/cerbai-load

.PHONY: build test check demo golden fuzz bench perf-smoke perf-load perf-stress perf-soak \
	image release verify-units verify-deploy clean

## build: the static binary, without cgo, in bin/cerbai
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cerbai

## test: formatting, vet, and every test with the race detector
test: check
	$(GO) test -race -count=1 ./...

check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## demo: cerbai with a demo mTLS token server and a fake streaming LLM
demo: build
	$(GO) run ./integration/cmd/demo -cerbai $(BIN)

## golden: rewrite the golden files of every package that has them
golden:
	$(GO) test ./cerbai/ ./tokens/ ./upstream/ ./health/ ./integration/load/ -update

## fuzz: each fuzz target for a short time in turn (FUZZTIME=30s for longer)
FUZZTIME ?= 10s
fuzz:
	@for pkg in ./tokens ./upstream ./cerbai; do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; \
	    $(GO) test $$pkg -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) || exit 1; \
	  done; \
	done

## bench: the load tool side by side (direct, cerbai, nginx when installed)
bench: build
	$(LOAD) bench -cerbai $(BIN) -out bench/results.json $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench . -benchmem ./tokens/ ./upstream/

perf-smoke: build
	$(LOAD) profile -name smoke -cerbai $(BIN) $(PERFFLAGS)
perf-load: build
	$(LOAD) profile -name load -cerbai $(BIN) $(PERFFLAGS)
perf-stress: build
	$(LOAD) profile -name stress -cerbai $(BIN) $(PERFFLAGS)
perf-soak: build
	$(LOAD) profile -name soak -cerbai $(BIN) $(PERFFLAGS)

## image: the distroless container image (needs a Docker engine)
image:
	docker build -f Dockerfile.distroless --build-arg VERSION=$(VERSION) \
	  --build-arg COMMIT=$(COMMIT) --build-arg DATE=$(DATE) -t cerbai:$(VERSION) .

## release: static binaries for linux/amd64 and linux/arm64 with checksums
release:
	rm -rf dist && mkdir -p dist
	for arch in amd64 arm64; do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
	    -o dist/cerbai-linux-$$arch ./cerbai || exit 1; \
	done
	cd dist && sha256sum cerbai-linux-* > SHA256SUMS && cat SHA256SUMS

## verify-units: systemd-analyze verify on the unit, where the tool exists
# (ExecStart is pointed at /bin/true: verify fails on a binary not installed here)
verify-units:
	@if command -v systemd-analyze >/dev/null; then \
	  tmp=$$(mktemp -d) && \
	  sed 's|^ExecStart=/usr/local/bin/cerbai|ExecStart=/bin/true|' \
	    deploy/systemd/cerbai.service > $$tmp/cerbai.service && \
	  out=$$(systemd-analyze verify $$tmp/cerbai.service 2>&1); rc=$$?; rm -rf $$tmp; \
	  if [ $$rc -ne 0 ] || [ -n "$$out" ]; then echo "$$out"; exit 1; fi; \
	  echo "ok deploy/systemd/cerbai.service"; \
	else echo "systemd-analyze not found: skipped"; fi

## verify-deploy: parse the Kubernetes manifests as YAML, where a YAML tool exists
verify-deploy:
	@if python3 -c 'import yaml' 2>/dev/null; then \
	  for f in deploy/kubernetes/*.yaml compose.yaml; do \
	    python3 -c 'import sys,yaml; list(yaml.safe_load_all(open(sys.argv[1])))' $$f \
	      && echo "ok $$f" || exit 1; \
	  done; \
	else echo "python3 yaml module not found: skipped"; fi
	@if command -v kubectl >/dev/null; then \
	  kubectl kustomize deploy/kubernetes >/dev/null && echo "ok kustomize deploy/kubernetes"; \
	else echo "kubectl not found: kustomize check skipped"; fi

clean:
	rm -rf bin dist bench
