package main

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The cache-mount cases (issue 17): builds whose RUN step keeps what it
// downloads or compiles in RUN --mount=type=cache directories. Each build
// is a fresh process with empty local state, as a pod is; Slipway keeps
// its cache mounts in the cache repository, BuildKit in a fresh pod loses
// them, a long-lived BuildKit daemon (buildkit-daemon) keeps them in its
// state. Scenarios, in this order, each on the state the one before left
// (as commits follow one another):
//
//	cold    an empty cache repository (and a new daemon)
//	warm    nothing changed
//	source  one source file changed before the cached RUN, so it runs again:
//	        a Go file of one package (gocache), a configuration file COPYed
//	        before apt-get (apt), a JavaScript file of the app, COPYed with
//	        the package files before npm ci (npmcache)
//	dep     one dependency added (with the source change): a vendored Go
//	        module and its use in one package, one more apt package, one
//	        more npm package in package.json and package-lock.json
var mountCases = []string{"gocache", "apt", "npmcache"}

var mountScenarios = []string{"cold", "warm", "source", "dep"}

func isMountCase(cs string) bool { return has(mountCases, cs) }

// mountTools are the tools of the cache-mount cases: kaniko has no cache
// mounts; buildah keeps them under the host's /var/tmp, which no fresh pod
// has.
var mountTools = []string{"slipway", volumeTool, "buildkit", daemonTool}

// volumeTool is Slipway with a --state-dir kept through a case's
// scenarios (one per case and run, empty before the cold build), as an
// ImageBuild's spec.cache.volume keeps one between its pods: unpacked stage
// trees and copies of cache mounts.
const volumeTool = "slipway-volume"

// daemonTool is BuildKit with one buildkitd per case and run, started
// before the cold build (not timed) and kept through the scenarios: its
// state, cache mounts included, survives between them, BuildKit's best
// case. It uses no registry cache.
const daemonTool = "buildkit-daemon"

// scenariosOf returns the scenarios of case cs.
func scenariosOf(cs string) []string {
	if isMountCase(cs) {
		return mountScenarios
	}
	return scenarios
}

// aptPackages are what the apt case installs (19 packages with their
// dependencies on the minbase base); the dep scenario adds aptDepPackage.
var aptPackages = []string{"bc", "bzip2", "file", "jq", "less", "netcat-openbsd", "patch", "psmisc", "tree", "unzip", "zip", "zstd"}

const aptDepPackage = "rsync"

func aptDockerfile(dep bool) string {
	pkgs := append([]string(nil), aptPackages...)
	if dep {
		pkgs = append(pkgs, aptDepPackage)
	}
	// Docker's documentation of cache mounts for apt: docker-clean removed
	// (it deletes the .debs after each install), the downloaded packages
	// kept, both directories locked as apt locks them.
	return `ARG BASE
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN rm -f /etc/apt/apt.conf.d/docker-clean; echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' > /etc/apt/apt.conf.d/keep-cache
COPY config/ /etc/bench/
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
    apt-get update && apt-get install -y --no-install-recommends ` + strings.Join(pkgs, " ") + `
COPY app.sh /app.sh
CMD ["/bin/sh", "/app.sh"]
`
}

// The gocache case: the service is built in the Go image (busybox with the
// host's toolchain, as the multiplatform case's builder stage) and its
// binary copied into busybox.
const gocacheDockerfile = `ARG GOLANG
ARG BASE
FROM ${GOLANG} AS build
ENV GOCACHE=/root/.cache/go-build GOFLAGS=-mod=vendor
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build go build -trimpath -o /out/ ./...
FROM ${BASE}
COPY --from=build /out/svc /usr/local/bin/svc
COPY app.sh /app.sh
CMD ["/bin/sh", "/app.sh"]
`

// The npmcache case: npm's download cache (~/.npm) is the cache mount;
// node_modules is installed from it by npm ci, and the app then loads
// every dependency.
const npmcacheDockerfile = `ARG BASE
FROM ${BASE}
WORKDIR /app
COPY . .
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund && node index.js
CMD ["node", "/app/index.js"]
`

//go:embed npmcache
var npmFixtures embed.FS

// npmFiles returns the npmcache context's files for a revision and with
// the dep (package.json and package-lock.json of npmcache/ or npmcache/dep/,
// made with `npm install --package-lock-only` from the registry).
func npmFiles(rev string, dep bool) (map[string]string, error) {
	dir := "npmcache"
	if dep {
		dir = "npmcache/dep"
	}
	files := map[string]string{"Dockerfile": npmcacheDockerfile}
	for _, f := range []string{"package.json", "package-lock.json"} {
		data, err := fs.ReadFile(npmFixtures, dir+"/"+f)
		if err != nil {
			return nil, err
		}
		files[f] = string(data)
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal([]byte(files["package.json"]), &pkg); err != nil {
		return nil, fmt.Errorf("npmcache package.json: %w", err)
	}
	var b strings.Builder
	b.WriteString("// The npmcache benchmark's app (generated by hack/bench): it loads every dependency.\n'use strict';\n")
	b.WriteString("const { revision } = require('./lib/revision');\nconst loaded = [];\n")
	for _, d := range sortedKeys(pkg.Dependencies) {
		fmt.Fprintf(&b, "loaded.push([%q, typeof require(%q)]);\n", d, d)
	}
	b.WriteString("console.log(revision, loaded.map(([n, t]) => n + ':' + t).join(' '));\n")
	files["index.js"] = b.String()
	files["lib/revision.js"] = fmt.Sprintf("'use strict';\nexports.revision = %q;\n", rev)
	return files, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// scenarioRev is the revision the source file says in scenario sc of run
// r: the same for every tool of a run (the builds compare), new in every
// run (each has its cache repository and daemon of its own anyway).
func scenarioRev(sc string, r int) string {
	if sc == "source" || sc == "dep" {
		return fmt.Sprintf("changed in run %d", r)
	}
	return "rev0"
}

// makeMountContext prepares case cs in dir: for gocache, the two vendored
// trees of the service (without and with the dep module) beside it.
func makeMountContext(cs, dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if cs == "gocache" {
		for _, dep := range []bool{false, true} {
			if err := goVariant(goVariantDir(dir, dep), dep); err != nil {
				return err
			}
		}
	}
	return setScenario(cs, dir, "cold", 0)
}

func goVariantDir(dir string, dep bool) string {
	if dep {
		return dir + ".dep"
	}
	return dir + ".base"
}

// setScenario makes dir the context of case cs in scenario sc of run r,
// writing only the files that differ and removing the others (the rest
// keep their times).
func setScenario(cs, dir, sc string, r int) error {
	rev, dep := scenarioRev(sc, r), sc == "dep"
	switch cs {
	case "gocache":
		return syncTree(goVariantDir(dir, dep), dir, map[string]string{
			"Dockerfile": gocacheDockerfile,
			"internal/" + goPkgName(goChangedPackage) + "/b.go": goFileB(goChangedPackage, rev),
		})
	case "apt":
		return writeFiles(dir, map[string]string{
			"Dockerfile":      aptDockerfile(dep),
			"config/app.conf": "# the app's configuration, COPYed before apt-get\nrevision = " + rev + "\n",
			"app.sh":          "#!/bin/sh\njq --version && rsync --version 2>/dev/null | head -1\n",
		}, true)
	case "npmcache":
		files, err := npmFiles(rev, dep)
		if err != nil {
			return err
		}
		return writeFiles(dir, files, true)
	}
	return fmt.Errorf("unknown cache-mount case %s", cs)
}

// writeFiles writes files under dir; with exact, it removes every other
// file under dir.
func writeFiles(dir string, files map[string]string, exact bool) error {
	for p, s := range files {
		if err := writeFile(filepath.Join(dir, p), s); err != nil {
			return err
		}
	}
	if !exact {
		return nil
	}
	return removeOthers(dir, func(rel string) bool { _, ok := files[rel]; return ok })
}

// removeOthers removes the files under dir that keep does not name, and
// then the directories left empty.
func removeOthers(dir string, keep func(rel string) bool) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			if rel != "." {
				dirs = append(dirs, p)
			}
			return nil
		}
		if !keep(filepath.ToSlash(rel)) {
			return os.Remove(p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i]) // fails when not empty
	}
	return nil
}

// syncTree makes dst hold src's regular files and those of override
// (relative slash-separated path -> content), which win, writing those
// that differ and removing the others.
func syncTree(src, dst string, override map[string]string) error {
	want := map[string]bool{}
	for p, s := range override {
		want[p] = true
		if err := writeFile(filepath.Join(dst, p), s); err != nil {
			return err
		}
	}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		rel = filepath.ToSlash(rel)
		if want[rel] {
			return nil
		}
		want[rel] = true
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return writeFile(filepath.Join(dst, rel), string(data))
	})
	if err != nil {
		return err
	}
	return removeOthers(dst, func(rel string) bool { return want[rel] })
}
