package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/slipway-dev/slipway/test/gitserver"
	"github.com/slipway-dev/slipway/test/probe"
)

// Canaries: one per credential of a build, each a value that must never be
// found by a RUN step that did not mount it.
const (
	canaryPush     = "push-c4nary-91d2"
	canaryGit      = "git-c4nary-5b7e"
	canarySSH      = "ssh-c4nary-0a4f"
	canaryUnused   = "unmounted-secret-c4nary-77c1"
	canaryUsed     = "mounted-secret-c4nary-3e90"
	canaryGitToken = "git-token-c4nary-d1c8"
	canaryEnv      = "env-c4nary-60b4"
)

// TestExecute_inplaceStepReadsNoCredential is finding 2 of issue 10: in a
// pod, a RUN step read the push secret, the git credentials, every build
// secret and GIT_PASSWORD from /proc/1/environ. Here the executor runs as
// in an executor pod: in its own image layout (in-place isolation), as
// PID 1 of its own PID namespace, with the pod's capabilities only (no
// CAP_SYS_PTRACE), its credentials staged by --stage-credentials from a
// kubelet-style Secret mount that the build container does not have. A
// git context over basic auth, a build secret the Dockerfile mounts and
// one it does not: the probe must find none of the credentials anywhere,
// and the mounted secret only in the step that mounts it.
func TestExecute_inplaceStepReadsNoCredential(t *testing.T) {
	env := newCorpusEnv(t)
	root := makeExecutorRoot(t)
	all := strings.Join([]string{canaryPush, canaryGit, canarySSH, canaryUnused, canaryUsed, canaryGitToken, canaryEnv}, " ")

	repos := t.TempDir()
	work := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, work, map[string]string{
		"Dockerfile": probe.Dockerfile(env.base, "used", strings.Fields(all)...),
		"probe.sh":   probe.Script,
	})
	gitserver.Commit(t, work, "probe")
	gitserver.Publish(t, work, repos, "org/probe.git", false)
	srv := gitserver.StartHTTP(t, repos, gitserver.WithBasicAuth("builder", canaryGit))

	// The Secret volumes as kubelet mounts them in the init container:
	// visible names are symlinks into a ..data directory.
	secretMount := filepath.Join(root, "var/run/secrets/slipway")
	data := filepath.Join(secretMount, "..2026_12_07_00_00_00.000000001")
	for p, content := range map[string]string{
		"docker/config.json":         `{"auths":{"` + env.reg.Host() + `":{"username":"builder","password":"` + canaryPush + `"}}}`,
		"git/username":               "builder",
		"git/password":               canaryGit,
		"git/ssh-privatekey":         canarySSH,
		"secrets/used":               canaryUsed,
		"secrets/unused":             canaryUnused,
		"secrets/GIT_AUTH_TOKEN.h:1": canaryGitToken,
	} {
		if err := os.MkdirAll(filepath.Join(data, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, p), []byte(content), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(data), filepath.Join(secretMount, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"docker", "git", "secrets"} {
		if err := os.Symlink("..data/"+d, filepath.Join(secretMount, d)); err != nil {
			t.Fatal(err)
		}
	}

	// The init container.
	if out, err := inExecutorRoot(t, root, nil, "--stage-credentials=/var/run/secrets/slipway", "--credentials-dir=/slipway/credentials"); err != nil {
		t.Fatalf("staging the credentials: %v\n%s", err, out)
	}
	// The build container mounts the staged directory, not the Secrets.
	if err := os.RemoveAll(filepath.Join(root, "var")); err != nil {
		t.Fatal(err)
	}
	ref := env.reg.Ref("probe/credentials:latest")
	// GIT_PASSWORD as kaniko takes it, in the environment (the staged
	// files win): /proc/1/environ must not show it.
	out, err := inExecutorRoot(t, root, []string{"GIT_PASSWORD=" + canaryEnv},
		"--context="+srv.URL+"/org/probe.git#main",
		"--credentials-dir=/slipway/credentials",
		"--destination="+ref,
		"--insecure-registry="+env.reg.Host(),
		"--result-file=/slipway/result.json",
		"--verbosity=debug",
	)
	if err != nil {
		raw, _ := os.ReadFile(filepath.Join(root, "slipway", "result.json"))
		t.Fatalf("in-place build: %v; result %s; output:\n%s", err, raw, out)
	}
	for _, c := range strings.Fields(all) {
		if strings.Contains(string(out), c) {
			t.Errorf("the build log holds %s", c)
		}
	}
	if entries, err := os.ReadDir(filepath.Join(root, "slipway", "credentials")); err != nil || len(entries) != 0 {
		t.Errorf("the credentials directory after the build: %v, %v; want it empty", entries, err)
	}

	// The first step mounts nothing; the second mounts secret used, which
	// it alone finds: the probe finds what is there to be found. It looked
	// where the credentials were: the staged directory, the executor's own
	// files and /proc entries.
	probe.Check(t, pullImage(t, ref), "used", canaryUsed, "/probe.sh", "/slipway/executor", "/proc/1/environ", "/proc/1/cmdline")
}

// TestExecute_chrootStepReadsNoCredential: under --isolation=chroot on a
// host, the same hostile steps as in TestExecute_inplaceStepReadsNoCredential
// find none of the credentials given the way kaniko takes them (a Docker
// config file, GIT_USERNAME and GIT_PASSWORD, --secret src= files), all
// host files outside the stage root, and cannot reach the namespace helper
// (PID 1 of the step's PID namespace, a root process of the host).
func TestExecute_chrootStepReadsNoCredential(t *testing.T) {
	env := newCorpusEnv(t)
	all := []string{canaryPush, canaryGit, canaryUnused, canaryUsed}
	repos := t.TempDir()
	work := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, work, map[string]string{
		"Dockerfile": probe.Dockerfile(env.base, "used", all...),
		"probe.sh":   probe.Script,
	})
	gitserver.Commit(t, work, "probe")
	gitserver.Publish(t, work, repos, "org/probe.git", false)
	srv := gitserver.StartHTTP(t, repos, gitserver.WithBasicAuth("builder", canaryGit))

	secrets := t.TempDir()
	for name, content := range map[string]string{
		"config.json": `{"auths":{"` + env.reg.Host() + `":{"username":"builder","password":"` + canaryPush + `"}}}`,
		"used":        canaryUsed,
		"unused":      canaryUnused,
	} {
		if err := os.WriteFile(filepath.Join(secrets, name), []byte(content), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("DOCKER_CONFIG", secrets)
	t.Setenv("GIT_USERNAME", "builder")
	t.Setenv("GIT_PASSWORD", canaryGit)
	ref := env.reg.Ref("probe/chroot:latest")
	b := runExecutor(t, "--context="+srv.URL+"/org/probe.git#main", "--destination="+ref, "--insecure-registry="+env.reg.Host(),
		"--secret=id=used,src="+filepath.Join(secrets, "used"), "--secret=id=unused,src="+filepath.Join(secrets, "unused"))
	if b.exit != 0 {
		t.Fatalf("exit %d, %s; log:\n%s", b.exit, b.resRaw, b.log)
	}
	for _, c := range all {
		if strings.Contains(b.log+b.resRaw, c) {
			t.Errorf("the log or the result holds %s", c)
		}
	}
	if !strings.Contains(b.log, "Isolation: chroot, pivot_root") {
		t.Errorf("the log does not say how the steps were confined:\n%s", b.log)
	}
	probe.Check(t, pullImage(t, ref), "used", canaryUsed, "/probe.sh", "/proc/1/environ", "/proc/1/cmdline")
}

// podCapabilities are the executor pod's (controllers.executorCapabilities),
// as setpriv names them.
const podCapabilities = "+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,+setfcap,+sys_chroot"

// inExecutorRoot runs the executor in root as it runs in an executor pod:
// PID 1 of new mount and PID namespaces, chrooted into its image's layout,
// with the pod's capabilities and no_new_privs, and nothing in its
// environment but PATH, HOME and env.
func inExecutorRoot(t *testing.T, root string, env []string, args ...string) ([]byte, error) {
	t.Helper()
	// As runExecutor: no attestation unless the test asks for one.
	if !slices.ContainsFunc(args, func(a string) bool {
		return strings.HasPrefix(a, "--provenance") || strings.HasPrefix(a, "--sbom")
	}) {
		args = append([]string{"--provenance=none"}, args...)
	}
	script := `set -e
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
mountpoint -q "$ROOT/dev" || {
	mount -t tmpfs -o mode=755,nosuid tmpfs "$ROOT/dev"
	for d in null zero random urandom tty; do
		[ -e "/dev/$d" ] || continue
		touch "$ROOT/dev/$d"
		mount --bind "/dev/$d" "$ROOT/dev/$d"
	done
}
exec setpriv --no-new-privs --inh-caps=-all --bounding-set=-all,` + podCapabilities + ` chroot "$ROOT" /slipway/executor "$@"
`
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"--mount", "--pid", "--fork", "--propagation", "private",
		"sh", "-c", script, "sh"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "ROOT=" + root, "HOME=/root"}, env...)
	return cmd.CombinedOutput()
}

func TestStageCredentials_skipsKubeletData(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	data := filepath.Join(src, "..2026_01_01")
	if err := os.MkdirAll(filepath.Join(data, "git"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "git", "password"), []byte("pw"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..2026_01_01", filepath.Join(src, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/git", filepath.Join(src, "git")); err != nil {
		t.Fatal(err)
	}
	if err := stageCredentials(src, dst); err != nil {
		t.Fatal(err)
	}
	var got []string
	filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
		if rel, _ := filepath.Rel(dst, p); rel != "." {
			fi, _ := os.Lstat(p)
			got = append(got, fmt.Sprintf("%s %v", rel, fi.Mode()))
		}
		return nil
	})
	if diff := cmp.Diff([]string{"git drwx------", "git/password -r--------"}, got); diff != "" {
		t.Errorf("staged (-want +got):\n%s", diff)
	}
}

// TestExecute_addGitGetsNoContextCredentials is finding 3 of issue 10: `ADD
// http://other-host/x.git /x` received the git context's credentials in
// clear. The context is on one server (basic auth), the ADD names a public
// repository on another (a spy recording Authorization headers): the build
// fetches it anonymously. Another port of the context's host is another
// origin too.
func TestExecute_addGitGetsNoContextCredentials(t *testing.T) {
	env := newCorpusEnv(t)
	repos := t.TempDir()
	lib := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, lib, map[string]string{"lib.txt": "lib\n"})
	gitserver.Commit(t, lib, "lib")
	gitserver.Publish(t, lib, repos, "org/lib.git", true)
	var spy gitserver.Spy
	other := gitserver.StartHTTP(t, repos, gitserver.WithSpy(&spy))

	work := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, work, map[string]string{
		"Dockerfile": "FROM " + env.base + "\nADD " + other.URL + "/org/lib.git#main /lib\n",
	})
	gitserver.Commit(t, work, "app")
	gitserver.Publish(t, work, repos, "org/app.git", true)
	own := gitserver.StartHTTP(t, repos, gitserver.WithBasicAuth("builder", canaryGit))
	t.Setenv("GIT_USERNAME", "builder")
	t.Setenv("GIT_PASSWORD", canaryGit)

	b := runExecutor(t, "--context="+own.URL+"/org/app.git#main", "--no-push", "--insecure-registry="+env.reg.Host())
	if b.exit != 0 {
		t.Fatalf("exit %d, %s; log:\n%s", b.exit, b.resRaw, b.log)
	}
	if spy.Requests() == 0 {
		t.Fatal("the ADD's server received no request")
	}
	if got := spy.Credentialed(); len(got) != 0 {
		t.Errorf("the ADD's server (another port of the context's host) received credentials: %q", got)
	}
}

// TestCredentials_sealWarnsInPlace: in place, credentials that stay where a
// RUN step can read them (a file outside --credentials-dir, user info in
// the --context URL, which /proc/1/cmdline shows) are warned about, without
// their values; on a host, where a step cannot name them, nothing is said.
func TestCredentials_sealWarnsInPlace(t *testing.T) {
	c := &credentials{readable: []string{"/kaniko/.docker/config.json"}}
	for _, tc := range []struct {
		isolation string
		want      []string
	}{
		{"inplace", []string{"/kaniko/.docker/config.json holds credentials", "the --context URL carries credentials"}},
		{"chroot", nil},
	} {
		var log bytes.Buffer
		o := &options{isolation: tc.isolation, context: "https://builder:" + canaryGit + "@git.example.com/org/app.git"}
		if err := c.seal(o, &log); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(log.String(), w) {
				t.Errorf("%s: the log does not say %q:\n%s", tc.isolation, w, log.String())
			}
		}
		if tc.want == nil && log.Len() > 0 {
			t.Errorf("%s: the log says %q, want nothing", tc.isolation, log.String())
		}
		if strings.Contains(log.String(), canaryGit) {
			t.Errorf("%s: the warning shows the password", tc.isolation)
		}
	}
}
