#!/usr/bin/env bash
# make verify: fails on what a commit should not carry. It reports every finding, then exits 1
# if there was any:
#
#   - Go files that gofmt would change (it checks, it does not format: make fmt does);
#   - go vet findings;
#   - generated files out of date: the deep-copy code, the CRDs and the RBAC rules are
#     regenerated in place (as make generate manifests does) and compared with what the tree
#     held before, so a stale file fails and its regenerated version is left to review;
#   - the chart's copies of the CRDs and of the manager's rules differing from config/;
#   - shellcheck findings in any shell script of the repository (Debian's shellcheck package;
#     hack/deps.sh installs it).
#
# It reads the working tree, tracked and untracked files alike (not what is ignored), so it
# checks a change before it is committed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO=${GO:-go}

failed=()
fail() {
	echo "verify.sh: $*" >&2
	failed+=("$1")
}

# files lists the tracked and untracked, not ignored, files that exist, matching the pathspecs.
files() {
	local f
	while IFS= read -r -d '' f; do
		[[ -f "${f}" ]] && printf '%s\0' "${f}"
	done < <(git ls-files -z --cached --others --exclude-standard -- "$@" | sort -zu)
}

echo "verify.sh: gofmt" >&2
mapfile -d '' gofiles < <(files '*.go')
unformatted=$(gofmt -l "${gofiles[@]}")
if [[ -n "${unformatted}" ]]; then
	fail "gofmt would change these files (make fmt formats them):" "${unformatted}"
	printf '%s\n' "${unformatted}" >&2
fi

echo "verify.sh: go vet" >&2
"${GO}" vet ./... || fail "go vet reported problems"

echo "verify.sh: generated files" >&2
generated=(api config/crd/bases config/rbac)
before=$(mktemp -d)
trap 'rm -rf "${before}"' EXIT
cp -a --parents "${generated[@]}" "${before}/"
hack/generate.sh generate
hack/generate.sh manifests
for d in "${generated[@]}"; do
	if ! diff -ru "${before}/${d}" "${d}" >&2; then
		fail "${d} was out of date: make generate manifests regenerated it (the diff above); review and commit it"
	fi
done

echo "verify.sh: the chart's copies of config/" >&2
make --no-print-directory verify-chart || fail "the chart's copies differ from config/"

echo "verify.sh: shellcheck" >&2
if ! command -v shellcheck >/dev/null; then
	fail "shellcheck is not installed: hack/deps.sh installs it (Debian's shellcheck package)"
else
	# Every shell script: *.sh, *.bash, and any file whose first line is a sh or bash #!.
	scripts=()
	while IFS= read -r -d '' f; do
		case "${f}" in
		*.sh | *.bash) scripts+=("${f}") ;;
		*) if head -n1 -- "${f}" | grep -Eq '^#!.*[/ ](ba)?sh([[:space:]]|$)'; then scripts+=("${f}"); fi ;;
		esac
	done < <(files)
	shellcheck -- "${scripts[@]}" || fail "shellcheck reported problems in the scripts above"
fi

if ((${#failed[@]} > 0)); then
	echo "verify.sh: FAILED: ${#failed[@]} check(s) found problems" >&2
	exit 1
fi
echo "verify.sh: all checks passed" >&2
