#!/usr/bin/env bash
# Builds Slipway's images without Docker, reproducibly, and prints their references with
# digests:
#
#   hack/images.sh --registry HOST:PORT   # push REGISTRY/slipway/executor:TAG, .../manager:TAG
#                                         # and .../binfmt:TAG
#   hack/images.sh --tar DIR              # write DIR/executor.tar, DIR/manager.tar and
#                                         # DIR/binfmt.tar (docker load)
#
# The binfmt image is the chart's optional binfmt DaemonSet's (hack/images/binfmt/Dockerfile):
# cmd/slipway-binfmt and Debian's static QEMU emulators (qemu-user-static, which hack/deps.sh
# installs) for the QEMU architectures in SLIPWAY_BINFMT_ARCHES (default: aarch64 arm riscv64
# ppc64le s390x, i.e. linux/arm64, arm, riscv64, ppc64le and s390x).
#
# Options: --tag TAG (default: the commit's short hash, or "dev" outside git), --insecure
# (plain HTTP to the registry; implied for 127.0.0.1 and localhost). Either output also writes
# DIR/executor.digest, DIR/manager.digest and DIR/binfmt.digest (with --registry, under
# ${SLIPWAY_STATE:-$PWD/_output}/images).
#
# Both images are built BY OUR EXECUTOR (dogfooding): the freshly built static executor binary
# builds executor/Dockerfile (with itself in the context) and hack/images/manager/Dockerfile,
# with --reproducible. The manager image is built the same way rather than ko-style with
# go-containerregistry: one build path, one reproducibility story, and a Dockerfile that says
# what the image holds. The output lines are
#
#   executor REF@sha256:...
#   manager  REF@sha256:...
#   binfmt   REF@sha256:...
#
# Reproducible: the binaries are built with -trimpath, an empty build ID and -buildvcs=false,
# so they depend on the source and the Go toolchain only; --reproducible sets every time in the
# image to the Unix epoch (or to SOURCE_DATE_EPOCH when that is set). The same commit, Go
# version and Debian ca-certificates package give the same digests (hack/images/images_test.go
# builds twice and compares).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"
GO=${GO:-go}

usage() {
	echo "usage: $0 (--registry HOST:PORT | --tar DIR) [--tag TAG] [--insecure]" >&2
	exit 2
}

registry='' tardir='' tag='' insecure=''
while (($#)); do
	case "$1" in
	--registry) registry=${2:?--registry needs HOST:PORT}; shift 2 ;;
	--registry=*) registry=${1#*=}; shift ;;
	--tar) tardir=${2:?--tar needs a directory}; shift 2 ;;
	--tar=*) tardir=${1#*=}; shift ;;
	--tag) tag=${2:?--tag needs a value}; shift 2 ;;
	--tag=*) tag=${1#*=}; shift ;;
	--insecure) insecure=1; shift ;;
	-h | --help) usage ;;
	*) echo "images.sh: unknown argument $1" >&2; usage ;;
	esac
done
if [[ -n "${registry}" && -n "${tardir}" ]] || [[ -z "${registry}" && -z "${tardir}" ]]; then
	usage
fi
if [[ -z "${tag}" ]]; then
	tag=$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
fi
case "${registry}" in
127.0.0.1:* | localhost:* | 127.0.0.1 | localhost) insecure=1 ;;
esac

ca=/etc/ssl/certs/ca-certificates.crt
if [[ ! -s "${ca}" ]]; then
	echo "images.sh: ${ca} is missing: install Debian's ca-certificates (apt-get install ca-certificates)" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/slipway-images.XXXXXX")
trap 'rm -rf "${work}"' EXIT
if [[ -n "${tardir}" ]]; then
	mkdir -p "${tardir}"
	out=$(cd "${tardir}" && pwd)
else
	out=${SLIPWAY_STATE:-${root}/_output}/images
	mkdir -p "${out}"
fi

# gobuild PKG OUT: a static binary that depends on the source and the toolchain only.
gobuild() {
	# At the caller's priority: `make demo` on a machine busy with CPU-bound work must finish.
	CGO_ENABLED=0 "${GO}" build -trimpath -buildvcs=false -ldflags=-buildid= -o "$2" "$1"
}

# Build contexts: exactly the files each Dockerfile copies. Modes are set by COPY --chmod or,
# for files copied into directories that COPY creates (which would get --chmod's mode too), by
# chmod here, and times by --reproducible, so nothing of this checkout's file metadata reaches
# a layer.
ectx=${work}/executor-context mctx=${work}/manager-context bctx=${work}/binfmt-context
mkdir -p "${ectx}" "${mctx}" "${bctx}/qemu-binfmt" "${bctx}/binfmt.d"
echo "images.sh: building the executor, slipway-sbom, manager and slipway-binfmt binaries" >&2
gobuild ./executor "${ectx}/executor"
# The SBOM generator (syft) runs as its own process beside the executor (--sbom), never linked
# into it: stripped, as it is 110 MB otherwise.
CGO_ENABLED=0 "${GO}" build -trimpath -buildvcs=false -ldflags='-buildid= -s -w' -o "${ectx}/slipway-sbom" ./cmd/slipway-sbom
gobuild . "${mctx}/manager"
gobuild ./cmd/slipway-binfmt "${bctx}/slipway-binfmt"
# The emulators under the names Debian's binfmt rules give them (<arch>-binfmt-P), and the rules.
for arch in ${SLIPWAY_BINFMT_ARCHES:-aarch64 arm riscv64 ppc64le s390x}; do
	qemu=/usr/bin/qemu-${arch}-static conf=/usr/lib/binfmt.d/qemu-${arch}.conf
	if [[ ! -x "${qemu}" || ! -s "${conf}" ]]; then
		echo "images.sh: ${qemu} or ${conf} is missing: install Debian's qemu-user-static (hack/deps.sh)" >&2
		exit 1
	fi
	cp "${qemu}" "${bctx}/qemu-binfmt/${arch}-binfmt-P"
	cp "${conf}" "${bctx}/binfmt.d/"
done
chmod 0644 "${bctx}"/binfmt.d/*
cp "${ca}" "${ectx}/ca-certificates.crt"
cp "${ca}" "${mctx}/ca-certificates.crt"
chmod 0644 "${ectx}/ca-certificates.crt" "${mctx}/ca-certificates.crt"
: >"${ectx}/executor-image"

# The builder is the executor binary that goes into the image. It runs with chroot isolation
# (the default outside the executor image); neither Dockerfile has a RUN step.
executor=${work}/executor
cp "${ectx}/executor" "${executor}"

# build NAME CONTEXT DOCKERFILE: builds one image and prints "NAME REF@DIGEST".
build() {
	local name=$1 context=$2 dockerfile=$3 ref
	# --provenance=none: a provenance attestation records the build's start and end times (as
	# BuildKit's does), which would make every build's digest differ; these images are
	# reproducible instead (hack/images/images_test.go).
	local args=(--context="dir://${context}" --dockerfile="${root}/${dockerfile}" --reproducible --provenance=none
		--digest-file="${out}/${name}.digest" --result-file="${work}/${name}.result.json"
		--work-dir="${work}/${name}-build" --verbosity=warn)
	if [[ -n "${registry}" ]]; then
		ref=${registry}/slipway/${name}:${tag}
		args+=(--destination="${ref}")
		[[ -z "${insecure}" ]] || args+=(--insecure-registry="${registry}")
	else
		ref=slipway/${name}:${tag}
		args+=(--no-push --destination="${ref}" --tar-path="${out}/${name}.tar")
	fi
	echo "images.sh: building ${ref} from ${dockerfile}" >&2
	if ! "${executor}" "${args[@]}" >"${work}/${name}.log" 2>&1; then
		cat "${work}/${name}.log" >&2
		echo "images.sh: building ${ref} failed" >&2
		exit 1
	fi
	printf '%-8s %s@%s\n' "${name}" "${ref}" "$(<"${out}/${name}.digest")"
}

build executor "${ectx}" executor/Dockerfile
build manager "${mctx}" hack/images/manager/Dockerfile
build binfmt "${bctx}" hack/images/binfmt/Dockerfile
