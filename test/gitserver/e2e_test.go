package gitserver_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/gitserver"
	"github.com/slipway-dev/slipway/test/testenv"
)

// buildExecutor builds the executor binary into a temporary directory.
func buildExecutor(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "executor")
	cmd := exec.Command("go", "build", "-o", out, "github.com/slipway-dev/slipway/executor")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the executor: %v\n%s", err, b)
	}
	return out
}

const e2ePassword = "e2e-Secret-Passw0rd"

// TestExecutor_gitContext builds an image from a private repository served
// by git http-backend, at a tag, from a sub-directory with its own
// .dockerignore, pushes it to the distribution registry, and checks the
// image, the result's commit, and that the password is nowhere.
func TestExecutor_gitContext(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the executor and starts servers")
	}
	exe := buildExecutor(t)
	reg := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, reg)

	root := t.TempDir()
	w := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, w, map[string]string{
		"README":            "not in the context\n",
		"app/Dockerfile":    "FROM " + base + "\nLABEL built.from=git\nCOPY . /app/\n",
		"app/.dockerignore": "ignored.txt\n",
		"app/keep.txt":      "v1\n",
		"app/ignored.txt":   "ignored\n",
	})
	commit := gitserver.Commit(t, w, "v1")
	gitserver.Git(t, w, "tag", "-a", "-m", "release", "v1")
	gitserver.WriteFiles(t, w, map[string]string{"app/keep.txt": "v2\n"})
	gitserver.Commit(t, w, "v2")
	gitserver.Publish(t, w, root, "org/app.git", false)
	srv := gitserver.StartHTTP(t, root, gitserver.WithBasicAuth("builder", e2ePassword))

	dest := reg.Ref("built/app:v1")
	resultFile := filepath.Join(t.TempDir(), "result.json")
	cmd := exec.Command(exe,
		"--context=git://"+srv.Host()+"/org/app.git#refs/tags/v1",
		"--context-sub-path=app",
		"--git=single-branch=true,recurse-submodules=false",
		"--destination="+dest,
		"--insecure", "--insecure-pull",
		"--result-file="+resultFile,
	)
	cmd.Env = append(os.Environ(), "GIT_PULL_METHOD=http", "GIT_USERNAME=builder", "GIT_PASSWORD="+e2ePassword)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	runErr := cmd.Run()
	resultJSON, err := os.ReadFile(resultFile)
	if err != nil {
		t.Fatalf("reading the result: %v (run: %v)\n%s", err, runErr, log.String())
	}
	if runErr != nil {
		t.Fatalf("executor: %v\nresult: %s\nlog:\n%s", runErr, resultJSON, log.String())
	}
	res, err := result.Decode(resultJSON)
	if err != nil {
		t.Fatal(err)
	}
	if res.Commit != commit {
		t.Errorf("result commit = %q, want %s", res.Commit, commit)
	}
	if !strings.Contains(log.String(), commit) {
		t.Errorf("log does not name the commit %s:\n%s", commit, log.String())
	}

	ref, err := name.ParseReference(dest, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("validate.Image: %v", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Config.Labels["built.from"]; got != "git" {
		t.Errorf("label built.from = %q, want git", got)
	}
	files := map[string]string{}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var all bytes.Buffer // every layer's content, to look for the password
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		all.WriteString(hdr.Name + "\n")
		if strings.HasPrefix(hdr.Name, "app/") && hdr.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			files[hdr.Name] = string(b)
			all.Write(b)
		}
	}
	if files["app/keep.txt"] != "v1\n" {
		t.Errorf("app/keep.txt = %q, want the tagged v1", files["app/keep.txt"])
	}
	for _, absent := range []string{"app/ignored.txt", "app/.git", "app/README"} {
		if _, ok := files[absent]; ok {
			t.Errorf("%s is in the image", absent)
		}
	}
	cfgJSON, _ := img.RawConfigFile()
	for what, b := range map[string][]byte{"result": resultJSON, "log": log.Bytes(), "config": cfgJSON, "layers": all.Bytes()} {
		if bytes.Contains(b, []byte(e2ePassword)) {
			t.Errorf("the git password is in the %s", what)
		}
	}

	// A revision that does not exist fails with SourceFetchFailed, naming
	// it, and pushes nothing.
	resultFile2 := filepath.Join(t.TempDir(), "result.json")
	cmd = exec.Command(exe,
		"--context=git://"+srv.Host()+"/org/app.git#refs/tags/v9",
		"--context-sub-path=app",
		"--destination="+reg.Ref("built/app:v9"),
		"--insecure", "--insecure-pull",
		"--result-file="+resultFile2,
	)
	cmd.Env = append(os.Environ(), "GIT_PULL_METHOD=http", "GIT_USERNAME=builder", "GIT_PASSWORD="+e2ePassword)
	log.Reset()
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err == nil {
		t.Fatal("executor succeeded with an unknown revision")
	}
	b, err := os.ReadFile(resultFile2)
	if err != nil {
		t.Fatal(err)
	}
	var res2 result.Result
	if err := json.Unmarshal(b, &res2); err != nil {
		t.Fatal(err)
	}
	if res2.Failure == nil || res2.Failure.Reason != result.ReasonSourceFetchFailed || !strings.Contains(res2.Failure.Message, "repository does not contain ref refs/tags/v9") {
		t.Errorf("failure = %+v, want SourceFetchFailed naming refs/tags/v9", res2.Failure)
	}
	if bytes.Contains(b, []byte(e2ePassword)) || bytes.Contains(log.Bytes(), []byte(e2ePassword)) {
		t.Error("the git password is in the failed build's result or log")
	}
	if _, err := remote.Head(mustRef(t, reg.Ref("built/app:v9"))); err == nil {
		t.Error("an image was pushed for the unknown revision")
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}
