#!/usr/bin/env bash
# `make bench`: Slipway's executor against kaniko v1.23.2, buildah (Debian) and BuildKit v0.34.2,
# side by side on one local registry (issue 3's Benchmark; how each peer runs: hack/bench/peers.sh).
#
# Builds the peers once and caches them under ${SLIPWAY_CACHE}/bench (hack/bench/peers.sh), builds
# our executor and the harness (hack/bench/main.go), mounts a tmpfs for the registry's storage and
# every tool's state, starts docker-registry on 127.0.0.1:${BENCH_PORT}, pushes the busybox base
# and (for bigbase) a debootstrap Debian base (hack/baseimage), runs the harness, and cleans up.
# The multiplatform case (linux/amd64 + linux/arm64 in one build; Slipway and BuildKit only) also
# pushes a multi-platform busybox and a Go toolchain image, and registers Debian's QEMU for arm64
# in the kernel's binfmt_misc table (cmd/slipway-binfmt, entries named slipway-bench-qemu-*,
# removed at the end); after the runs it checks that both tools built the same platforms with the
# same file trees.
# The cache-mount cases (issue 17; hack/bench/mountcases.go) build with RUN --mount=type=cache:
# gocache (a Go service of 49 packages with vendored modules, go build in the Go toolchain image),
# apt (apt-get install of a dozen packages on the Debian base, its sources on the mirror this
# machine reaches), npmcache (npm ci in a Debian base with Debian's nodejs and npm, made once and
# cached beside the Debian tarball); scenarios cold, warm, source, dep; tools slipway, slipway-volume
# (a --state-dir kept through a case's scenarios, as spec.cache.volume), buildkit and buildkit-daemon
# (one buildkitd kept through a case's scenarios, its cache mounts with it). Their RUN steps reach
# the Debian mirror and the npm registry.
# Needs root (mounts, chroots, namespaces). It prints a table; it fails only when a build fails.
#
#   BENCH_CASES=hello,multistage,manyfiles,bigbase,bigrun,multiplatform,gocache,apt,npmcache   (default: all)
#                           bigrun is bigbase with the changed COPY followed by a RUN (issue 17's item 6)
#   BENCH_TOOLS=slipway,slipway-volume,slipway-supply,kaniko,kaniko-ccl,buildah,buildkit,buildkit-daemon   (default: all)
#                           slipway-supply is Slipway with --provenance=max, --sbom=true and
#                           --sign-key (a key of the real cosign's generate-key-pair, built by
#                           hack/tools/cosign/build.sh and cached): the table prints what it adds
#   BENCH_RUNS=3            runs per cell (medians)
#   BENCH_PORT=25500        the registry's port
#   BENCH_IDLE=0.8          the idle CPU fraction to wait for before each build ...
#   BENCH_IDLE_WAIT=20s     ... for at most this long
#   BENCH_BUILDAH_DRIVER=overlay   buildah's storage driver (vfs also works; slower)
#   BENCH_TMPFS_SIZE=16g    the tmpfs's size limit (it takes only what it holds)
#   BENCH_SLIPWAY=PATH      use this executor instead of building ./executor
#   BENCH_SLIPWAY_ARGS="--verbosity=debug"   more arguments for every Slipway build
#   BENCH_KEEP=1            keep the tmpfs (logs, registry) mounted at the end; prints where
#   BENCH_VERBOSE=1         print every build's log
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ((EUID != 0)); then
	echo "bench.sh: needs root (mounts, chroots and namespaces for the builders)" >&2
	exit 1
fi

cache=${SLIPWAY_CACHE:-${HOME}/.cache/slipway}/bench
bin=${cache}/bin
port=${BENCH_PORT:-25500}
host=127.0.0.1:${port}
KANIKO_VERSION=${KANIKO_VERSION:-v1.23.2}
BUILDKIT_VERSION=${BUILDKIT_VERSION:-v0.34.2}
export KANIKO_VERSION BUILDKIT_VERSION
IFS=, read -r -a cases <<<"${BENCH_CASES:-hello,multistage,manyfiles,bigbase,bigrun,multiplatform,gocache,apt,npmcache}"
IFS=, read -r -a tools <<<"${BENCH_TOOLS:-slipway,slipway-volume,slipway-supply,kaniko,kaniko-ccl,buildah,buildkit,buildkit-daemon}"
has() {
	local x
	for x in "${@:2}"; do [[ "${x}" == "$1" ]] && return 0; done
	return 1
}

say() { printf '==> %s\n' "$*" >&2; }

hack/deps.sh docker-registry busybox-static buildah runc debootstrap uidmap ca-certificates
mkdir -p "${bin}"

say "Building what the benchmark runs (cached under ${cache})"
peers=()
if has kaniko "${tools[@]}" || has kaniko-ccl "${tools[@]}"; then peers+=(kaniko); fi
if has buildkit "${tools[@]}" || has buildkit-daemon "${tools[@]}"; then peers+=(buildkit); fi
if ((${#peers[@]})); then hack/bench/peers.sh "${peers[@]}"; fi
export CGO_ENABLED=0
nice -n 19 go build -trimpath -o "${bin}/bench" ./hack/bench
nice -n 19 go build -trimpath -o "${bin}/baseimage" ./hack/baseimage
if has slipway-supply "${tools[@]}"; then
	# --sbom runs slipway-sbom from the executor's directory (as in the executor image).
	nice -n 19 go build -trimpath -ldflags='-s -w' -o "${bin}/slipway-sbom" ./cmd/slipway-sbom
	cosign=$(hack/tools/cosign/build.sh v3)
	keys=${cache}/signing
	if [[ ! -f "${keys}/cosign.key" ]]; then
		mkdir -p "${keys}"
		printf 'bench' >"${keys}/password"
		(cd "${keys}" && COSIGN_PASSWORD=bench "${cosign}" generate-key-pair >/dev/null)
	fi
	export BENCH_SIGN_KEY=${keys}/cosign.key BENCH_SIGN_PASSWORD_FILE=${keys}/password
fi
if has multiplatform "${cases[@]}"; then
	hack/deps.sh qemu-user-static
	nice -n 19 go build -trimpath -o "${bin}/slipway-binfmt" ./cmd/slipway-binfmt
fi
if has slipway "${tools[@]}" || has slipway-volume "${tools[@]}"; then
	if [[ -z "${BENCH_SLIPWAY:-}" ]]; then
		nice -n 19 go build -trimpath -o "${bin}/slipway-executor" ./executor
		BENCH_SLIPWAY=${bin}/slipway-executor
	fi
fi

work=$(mktemp -d /tmp/slipway-bench.XXXXXX)
regpid=
binfmt=
# shellcheck disable=SC2317 # a false positive: cleanup runs from the EXIT trap below, which shellcheck does not follow
cleanup() {
	if [[ -n "${binfmt}" ]]; then
		"${bin}/slipway-binfmt" --uninstall --platforms=arm64 --name-prefix=slipway-bench-qemu- >/dev/null || true
	fi
	if [[ -n "${regpid}" ]]; then
		kill "${regpid}" 2>/dev/null || true
		wait "${regpid}" 2>/dev/null || true
	fi
	if [[ -n "${BENCH_KEEP:-}" ]]; then
		echo "bench.sh: kept ${work} (umount -R ${work} && rmdir ${work} when done)" >&2
		return
	fi
	# Anything a tool left mounted under the tmpfs first, deepest first.
	grep -o " ${work}/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	umount -l "${work}" 2>/dev/null || true
	rmdir "${work}" 2>/dev/null || true
}
trap cleanup EXIT
mount -t tmpfs -o "size=${BENCH_TMPFS_SIZE:-16g},mode=755" slipway-bench "${work}"
mkdir -p "${work}/registry/storage" "${work}/state"
logs=${cache}/logs/$(date +%Y%m%d-%H%M%S)
mkdir -p "${logs}"

say "Starting docker-registry on ${host} (storage on tmpfs ${work})"
cat >"${work}/registry/config.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${work}/registry/storage
  delete:
    enabled: true
http:
  addr: ${host}
YAML
env -i PATH="${PATH}" /usr/bin/docker-registry serve "${work}/registry/config.yml" >"${work}/registry/registry.log" 2>&1 </dev/null &
regpid=$!
for _ in $(seq 100); do
	curl -s -o /dev/null --max-time 1 "http://${host}/v2/" && break
	kill -0 "${regpid}" 2>/dev/null || { cat "${work}/registry/registry.log" >&2; exit 1; }
	sleep 0.1
done

say "Pushing the base images"
baseargs=(--registry "${host}")
debtar=${cache}/debian-bookworm-minbase.tar.gz
if has bigbase "${cases[@]}" || has bigrun "${cases[@]}" || has apt "${cases[@]}" || has npmcache "${cases[@]}"; then
	baseargs+=(--debian-tarball "${debtar}")
fi
mapfile -t bases < <("${bin}/baseimage" "${baseargs[@]}")
echo "${bases[*]}" >&2
multi=()
if has multiplatform "${cases[@]}" || has gocache "${cases[@]}"; then
	mapfile -t multi < <("${bin}/baseimage" --registry "${host}" --multiplatform)
	echo "${multi[*]}" >&2
fi
if has multiplatform "${cases[@]}"; then
	binfmt=1
	"${bin}/slipway-binfmt" --platforms=arm64 --name-prefix=slipway-bench-qemu- >&2
fi

say "Benchmarking: cases ${cases[*]}; tools ${tools[*]}; ${BENCH_RUNS:-3} run(s) each"
rc=0
env BENCH_REGISTRY="${host}" BENCH_WORK="${work}" BENCH_LOGS="${logs}" BENCH_BUSYBOX="${bases[0]}" BENCH_DEBIAN="${bases[1]:-}" \
	BENCH_MULTI="${multi[0]:-}" BENCH_GOLANG="${multi[1]:-}" \
	BENCH_DEBIAN_TARBALL="${debtar}" BENCH_CACHE="${cache}" \
	BENCH_SLIPWAY="${BENCH_SLIPWAY:-}" \
	BENCH_KANIKO="${bin}/kaniko-executor-${KANIKO_VERSION}" \
	BENCH_BUILDKITD="${bin}/buildkitd-${BUILDKIT_VERSION}" BENCH_BUILDCTL="${bin}/buildctl-${BUILDKIT_VERSION}" \
	"${bin}/bench" || rc=$?
exit "${rc}"
