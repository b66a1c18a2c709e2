# rund: `make run` builds a static binary, writes development certificates if there are none, serves.
# `make test` is what CI runs.
GO        ?= go
BIN       := rund
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
TOOLS     := $(CURDIR)/.cache/tools

.PHONY: build run certs test fuzz e2e e2e-arm64 e2e-armv7 e2e-riscv64 e2e-trixie e2e-floor e2e-systemd bench check proto proto-check clean release release-check release-sizes

# grpcnotrace leaves out grpc's golang.org/x/net/trace support (rund never enables it) and with it
# html/template and more: 2 MB less binary, and a faster start of rund itself (the client, a plain build's init).
# -buildvcs=auto overrides a GOFLAGS=-buildvcs=false in the environment, so that the binary records its
# revision (rund version) when built in a checkout. VERSION is what rund version prints.
GOFLAGS_BUILD := -trimpath -buildvcs=auto
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null)
LDFLAGS   := -s -w -X main.version=$(VERSION)

# build makes rund with its lean init inside: first the init alone (-tags rundinit: init.go, mounts.go,
# creds*.go, seccomp*.go and initmain.go, which link no grpc, protobuf or crypto/tls), for the GOOS and
# GOARCH of the environment, then rund with it embedded (-tags embedinit, initembed.go) through a
# -overlay that names it rund-init.bin, so nothing is written into the checkout. rund serve runs it from
# a sealed memfd. A plain `go build` leaves it out, and rund runs itself as each job's init.
# The init never collects (GOGC=off, spawn.go), so it is built without the Green Tea collector, which
# writes to the last page of every small-object span it allocates, a page an idle init keeps (issue 24).
build:
	CGO_ENABLED=0 GOEXPERIMENT=nogreenteagc $(GO) build -trimpath -tags rundinit -ldflags='-s -w' -o $(BIN).init .
	printf '{"Replace":{"%s/rund-init.bin":"%s.init"}}' '$(CURDIR)' '$(abspath $(BIN))' > $(BIN).overlay
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -tags grpcnotrace,embedinit -overlay $(BIN).overlay \
		-ldflags='$(LDFLAGS)' -o $(BIN) .
	rm -f $(BIN).init $(BIN).overlay

# release cross-builds the same static binary for each board rund is released for (armv7 is GOARCH=arm
# GOARM=7) into dist/rund-VERSION-linux-ARCH, and dist/SHA256SUMS for them. dist/ is emptied first, so
# that SHA256SUMS names only this version's binaries.
RELEASE_ARCHS := amd64 arm64 armv7 riscv64
release:
	@test -n "$(VERSION)" || { echo "make release: no version: git describe found nothing; set VERSION="; exit 1; }
	rm -rf dist && mkdir dist
	@set -e; for a in $(RELEASE_ARCHS); do \
		case $$a in armv7) arch="GOARCH=arm GOARM=7" ;; *) arch="GOARCH=$$a" ;; esac; \
		env GOOS=linux $$arch $(MAKE) --no-print-directory build VERSION='$(VERSION)' \
			BIN=dist/$(BIN)-$(VERSION)-linux-$$a; \
	done
	cd dist && sha256sum $(BIN)-$(VERSION)-linux-* > SHA256SUMS

# release-check proves what release wrote (static, stripped, right architecture, SHA256SUMS, and each
# binary runs: natively or under qemu-user); CI runs it. release-sizes writes the binaries' sizes into
# BENCHMARKS.md's "Release binaries" section, which bench keeps.
release-check:
	VERSION='$(VERSION)' bash .ci/release-check.sh check
release-sizes: release
	VERSION='$(VERSION)' bash .ci/release-check.sh sizes | bash .ci/release-check.sh put-section BENCHMARKS.md

# certs writes a development PKI into tls/ unless one is there.
certs: build
	@test -f tls/ca.crt || ./$(BIN) certs -dir tls

run: certs
	./$(BIN) serve -addr localhost:8000

check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt wants to rewrite: $$out"; exit 1; fi
	$(GO) vet ./...
	@deps=$$($(GO) list -deps -tags rundinit . | grep -E '^google\.golang\.org/|^crypto/(tls|x509)$$|^net/http$$|^os/signal$$' || true); \
		if [ -n "$$deps" ]; then echo "the lean init (-tags rundinit) links:" $$deps; exit 1; fi

test: check build
	$(GO) test -race -count=1 -timeout 30m ./...

# fuzz runs every fuzz target for FUZZTIME; their seeds are in the code and in testdata/fuzz. A count
# (Nx), not a duration: at the end of a duration Go 1.26's fuzzing coordinator can fail a target that
# found nothing with "context deadline exceeded" (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 20000x
fuzz:
	@for f in $$($(GO) test -list '^Fuzz' . | grep '^Fuzz'); do \
		echo "fuzz $$f for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) . || exit 1; \
	done

# e2e boots a throwaway VM (qemu under TCG, Debian's cloud kernel, cgroup_no_v1=all) and proves there
# that every limit is enforced (vm_test.go, e2e_guest_test.go). As root; `make test` runs it too.
e2e:
	$(GO) test -count=1 -run '^TestVM$$' -v .

# e2e-arm64 runs the same guest suite in an emulated arm64 VM (qemu-system-aarch64, Debian's arm64
# cloud kernel, the binaries cross-compiled). As root; not part of test, as emulating arm64 takes
# minutes: .ci/run calls it after test.
e2e-arm64:
	RUND_E2E_ARM64=1 $(GO) test -count=1 -run '^TestVMArm64$$' -v -timeout 20m .

# e2e-armv7 and e2e-riscv64 run the same guest suite on 32-bit ARM (qemu-system-arm's virt machine,
# a cortex-a15, Debian bookworm's armmp-lpae kernel and armhf busybox, rund built GOARM=7) and on
# riscv64 (qemu-system-riscv64's virt machine, Debian trixie's riscv64 kernel and busybox). As root;
# minutes each under TCG, so .ci/run calls them after test.
e2e-armv7:
	RUND_E2E_ARMV7=1 $(GO) test -count=1 -run '^TestVMArmv7$$' -v -timeout 30m .
e2e-riscv64:
	RUND_E2E_RISCV64=1 $(GO) test -count=1 -run '^TestVMRiscv64$$' -v -timeout 20m .

# e2e-trixie runs the x86-64 guest suite on a second kernel series: Debian trixie's cloud kernel and
# busybox (.ci/vm-assets.sh .cache/vm-trixie amd64 trixie), where e2e boots bookworm's. As root; not
# part of test, which boots one series; .ci/run calls it after e2e-arm64.
e2e-trixie:
	RUND_E2E_TRIXIE=1 $(GO) test -count=1 -run '^TestVMTrixie$$' -v -timeout 20m .

# e2e-floor boots a kernel below rund's floor (Debian bullseye's cloud kernel, 5.10) and proves that
# rund serve refuses it: non-zero exit, kernel.go's message, nothing left behind (vm_floor_test.go).
# As root; .ci/run calls it after e2e-trixie.
e2e-floor:
	RUND_E2E_FLOOR=1 $(GO) test -count=1 -run '^TestVMFloor$$' -v -timeout 10m .

# e2e-systemd boots systemd (Debian bookworm's 252, then trixie's 257: root filesystems that
# .ci/systemd-assets.sh builds with mmdebstrap and caches in .cache/systemd-bookworm and .cache/systemd)
# in a throwaway VM and proves contrib/rund.service there: start, limits, reload, crash and restart,
# stop, and each hardening option it leaves off (systemd_vm_test.go, systemd_guest_test.go). As root;
# minutes of its own, so not part of test; .ci/run runs it after test.
e2e-systemd:
	RUND_E2E_SYSTEMD=1 $(GO) test -count=1 -run '^TestSystemdVM$$' -v -timeout 50m .

# bench measures rund against a raw baseline for each figure, in one run, and rewrites BENCHMARKS.md
# (bench_test.go). As root; about 8 minutes. Not part of test, and never under -race, which would
# distort every figure; test only builds it.
# TestBenchReport rewrites the whole file; the "Release binaries" section (release-sizes) is put back.
bench:
	@mkdir -p .cache && bash .ci/release-check.sh get-section BENCHMARKS.md > .cache/release-sizes.md
	RUND_BENCH=1 $(GO) test -count=1 -run '^TestBenchReport$$' -v -timeout 20m .
	bash .ci/release-check.sh put-section BENCHMARKS.md < .cache/release-sizes.md

# protoc comes from Debian's protobuf-compiler; the Go plugins are pinned here.
$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

proto: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	protoc --plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc \
		--go_out=. --go_opt=module=rund --go-grpc_out=. --go-grpc_opt=module=rund rpc.proto

# proto-check fails when rpcpb/ is not what `make proto` makes from rpc.proto.
proto-check: proto
	git diff --exit-code -- rpcpb/

clean:
	rm -f $(BIN)
	rm -rf dist
