package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/sign"
	"github.com/slipway-dev/slipway/test/probe"
	"github.com/slipway-dev/slipway/test/testenv"
)

// cosignCLI runs the real cosign of path against reg.
func cosignCLI(t *testing.T, path string, reg *testenv.Registry, args ...string) (string, error) {
	t.Helper()
	cmd := testenv.CosignCommand(t, path, reg.DockerConfig(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() {
		<-ctx.Done()
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	}()
	err := cmd.Run()
	return out.String(), err
}

// cosignNoTlog are cosign's flags for a plain-HTTP registry without a
// transparency log.
var cosignNoTlog = []string{"--insecure-ignore-tlog=true", "--allow-http-registry", "--allow-insecure-registry"}

// A build with --sign-key, its key made by cosign generate-key-pair, is
// verified by the real cosign: `cosign verify --key` of the tag (the
// index) and of each image, and `cosign verify-attestation --type
// slsaprovenance1` (the provenance is SLSA v1; cosign's "slsaprovenance"
// is v0.2) of the tag and of the image, with cosign v2 and v3. Another
// key fails. The password
// comes from COSIGN_PASSWORD or --sign-key-password-file; a wrong one
// fails the build before it starts, saying so without the password. The
// RUN steps (a hostile probe) find neither the key's bytes nor the
// password, and the log and result hold neither.
func TestExecute_signedWithCosignsKey(t *testing.T) {
	env := newCorpusEnv(t)
	const password = "sign-pw-c4nary-41e7"
	priv, pub := testenv.CosignKeyPair(t, password)
	keyDir := t.TempDir()
	keyPath, pubPath, pwPath := filepath.Join(keyDir, "cosign.key"), filepath.Join(keyDir, "cosign.pub"), filepath.Join(keyDir, "password")
	for p, b := range map[string][]byte{keyPath: priv, pubPath: pub, pwPath: []byte(password + "\n")} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keyLine := strings.Split(string(priv), "\n")[1]
	canaries := []string{password, keyLine}

	ctxDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(probe.Dockerfile(env.base, "s", append(canaries, "mounted-c4nary")...)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "probe.sh"), []byte(probe.Script), 0o644); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(secretFile, []byte("mounted-c4nary"), 0o600); err != nil {
		t.Fatal(err)
	}
	common := []string{"--context=dir://" + ctxDir, "--insecure-registry=" + env.reg.Host(), "--secret=id=s,src=" + secretFile, "--provenance=min", "--sign-key=" + keyPath}

	for _, how := range []string{"COSIGN_PASSWORD", "--sign-key-password-file"} {
		t.Run(how, func(t *testing.T) {
			dest := env.reg.Ref("app/signed:" + strings.Trim(strings.ToLower(how), "-"))
			args := append(common, "--destination="+dest)
			if how == "COSIGN_PASSWORD" {
				t.Setenv("COSIGN_PASSWORD", password)
			} else {
				args = append(args, "--sign-key-password-file="+pwPath)
			}
			b := runExecutor(t, args...)
			if b.exit != 0 {
				t.Fatalf("build failed: %s\n%s", b.resRaw, b.log)
			}
			if _, set := os.LookupEnv("COSIGN_PASSWORD"); set {
				t.Errorf("COSIGN_PASSWORD is still in the executor's environment")
			}
			for _, c := range canaries {
				if strings.Contains(b.log, c) || strings.Contains(b.resRaw, c) {
					t.Errorf("the log or the result holds the key or its password")
				}
			}
			if len(b.res.Attestations) != 1 || len(b.res.Signatures) != 2 {
				t.Fatalf("result %s; want one attestation, the index's and the image's signatures", b.resRaw)
			}
			img := b.res.Attestations[0].Image
			if s := b.res.Signatures[0]; s.Digest != b.res.Digest || s.Signature == "" || s.Attestations == "" {
				t.Errorf("the index's signature %+v", s)
			}
			if s := b.res.Signatures[1]; s.Digest != img || s.Signature == "" || s.Attestations == "" {
				t.Errorf("the image's signature %+v", s)
			}
			repo := env.reg.Ref("app/signed")
			for _, cli := range testenv.Cosigns(t) {
				for _, ref := range []string{dest, repo + "@" + b.res.Digest, repo + "@" + img} {
					if out, err := cosignCLI(t, cli.Path, env.reg, append(append([]string{"verify", "--key", pubPath}, cosignNoTlog...), ref)...); err != nil {
						t.Errorf("%s verify %s: %v\n%s", cli, ref, err, out)
					}
				}
				for _, ref := range []string{dest, repo + "@" + img} {
					out, err := cosignCLI(t, cli.Path, env.reg, append(append([]string{"verify-attestation", "--key", pubPath, "--type", "slsaprovenance1"}, cosignNoTlog...), ref)...)
					if err != nil {
						t.Errorf("%s verify-attestation %s: %v\n%s", cli, ref, err, out)
					}
				}
			}
			// The .sig and .att tags are where cosign keeps them, and the
			// result names their manifests.
			d, _ := name.NewDigest(repo+"@"+b.res.Digest, name.Insecure)
			sigTag, _ := sign.SignatureTag(d)
			if got := remoteDigest(t, sigTag.String(), env.reg); got.String() != b.res.Signatures[0].Signature {
				t.Errorf("%s is %s; the result says %s", sigTag, got, b.res.Signatures[0].Signature)
			}
			probe.Check(t, pullImage(t, dest), "s", "mounted-c4nary")
		})
	}

	t.Run("another key fails", func(t *testing.T) {
		_, otherPub := testenv.CosignKeyPair(t, "other")
		other := filepath.Join(t.TempDir(), "other.pub")
		if err := os.WriteFile(other, otherPub, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := cosignCLI(t, testenv.Cosign(t), env.reg, append(append([]string{"verify", "--key", other}, cosignNoTlog...), env.reg.Ref("app/signed:cosign_password"))...); err == nil {
			t.Errorf("cosign verify with another key passed:\n%s", out)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		t.Setenv("COSIGN_PASSWORD", "not-"+password)
		b := runExecutor(t, append(common, "--destination="+env.reg.Ref("app/signed:wrong"))...)
		if b.exit == 0 || b.res.Failure == nil || b.res.Failure.Reason != result.ReasonInvalidArguments || !strings.Contains(b.res.Failure.Message, "wrong password") {
			t.Fatalf("result %s; want InvalidArguments, wrong password", b.resRaw)
		}
		if strings.Contains(b.log+b.resRaw, password) || strings.Contains(b.log, "Built image") {
			t.Errorf("the password is in the log, or the build went on:\n%s", b.log)
		}
		assertNotPushed(t, env.reg.Ref("app/signed:wrong"))
	})
}

// In a pod the key comes staged in the credentials directory
// (signing/cosign.key, signing/cosign.password) from a Secret the build
// container does not mount, and the password may be in COSIGN_PASSWORD
// too: a hostile RUN step (the probe: every file, /proc/1/environ and
// cmdline, the executor's own files) finds neither the key's bytes nor a
// password, the directory is emptied before the first step, and what is
// pushed is signed.
func TestExecute_inplaceStepReadsNoSigningKey(t *testing.T) {
	env := newCorpusEnv(t)
	root := makeExecutorRoot(t)
	const password, envPassword = "staged-pw-c4nary-93ab", "env-pw-c4nary-7f10"
	priv, pub := testenv.CosignKeyPair(t, password)
	pubPath := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(pubPath, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	keyLine := strings.Split(string(priv), "\n")[1]
	canaries := []string{password, envPassword, keyLine}

	secretMount := filepath.Join(root, "var/run/secrets/slipway")
	for p, content := range map[string]string{"signing/cosign.key": string(priv), "signing/cosign.password": password, "secrets/used": "used-c4nary"} {
		if err := os.MkdirAll(filepath.Join(secretMount, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(secretMount, p), []byte(content), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := inExecutorRoot(t, root, nil, "--stage-credentials=/var/run/secrets/slipway", "--credentials-dir=/slipway/credentials"); err != nil {
		t.Fatalf("staging the credentials: %v\n%s", err, out)
	}
	if err := os.RemoveAll(filepath.Join(root, "var")); err != nil {
		t.Fatal(err)
	}
	ctxDir := filepath.Join(root, "workspace")
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(probe.Dockerfile(env.base, "used", append(canaries, "used-c4nary")...)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "probe.sh"), []byte(probe.Script), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := env.reg.Ref("probe/signed:latest")
	out, err := inExecutorRoot(t, root, []string{"COSIGN_PASSWORD=" + envPassword},
		"--context=dir:///workspace",
		"--credentials-dir=/slipway/credentials",
		"--destination="+dest,
		"--insecure-registry="+env.reg.Host(),
		"--provenance=min",
		"--result-file=/slipway/result.json",
	)
	raw, _ := os.ReadFile(filepath.Join(root, "slipway", "result.json"))
	if err != nil {
		t.Fatalf("in-place build: %v; result %s; output:\n%s", err, raw, out)
	}
	for _, c := range canaries {
		if strings.Contains(string(out), c) || strings.Contains(string(raw), c) {
			t.Errorf("the log or the result holds a canary of the key")
		}
	}
	if entries, err := os.ReadDir(filepath.Join(root, "slipway", "credentials")); err != nil || len(entries) != 0 {
		t.Errorf("the credentials directory after the build: %v, %v; want it empty", entries, err)
	}
	res, err := result.Decode(raw)
	if err != nil || len(res.Signatures) == 0 {
		t.Fatalf("result %s: %v; want signatures", raw, err)
	}
	if o, err := cosignCLI(t, testenv.Cosign(t), env.reg, append(append([]string{"verify", "--key", pubPath}, cosignNoTlog...), dest)...); err != nil {
		t.Errorf("cosign verify %s: %v\n%s", dest, err, o)
	}
	probe.Check(t, pullImage(t, dest), "used", "used-c4nary", "/slipway/executor", "/proc/1/environ", "/proc/1/cmdline")
	// The in-place probe ran in the pod's root: its image is what was
	// pushed, resolved from the index.
	if _, err := remote.Head(mustTag(t, dest)); err != nil {
		t.Errorf("%s: %v", dest, err)
	}
}

func mustTag(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// loadSigner: a key (and password file) outside the credentials
// directory is a file RUN steps could read in place (readable, which seal
// warns about), and its directory one an in-place build never clears or
// snapshots (excludes); staged in the credentials directory it is neither.
// COSIGN_PASSWORD leaves the environment once read.
func TestLoadSigner_readableAndExcluded(t *testing.T) {
	priv, _ := testenv.CosignKeyPair(t, "pw")
	outside := t.TempDir()
	keyPath := filepath.Join(outside, "cosign.key")
	if err := os.WriteFile(keyPath, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COSIGN_PASSWORD", "pw")
	o := &options{}
	o.sc.signKey = keyPath
	var readable []string
	s, err := loadSigner(o, &readable)
	if err != nil || s == nil {
		t.Fatalf("loadSigner: %v, %v", s, err)
	}
	if len(readable) != 1 || readable[0] != keyPath {
		t.Errorf("readable %v; want the key file", readable)
	}
	if ex := o.sc.excludes(); len(ex) != 1 || ex[0] != outside {
		t.Errorf("excludes %v; want %s", ex, outside)
	}
	if _, set := os.LookupEnv("COSIGN_PASSWORD"); set {
		t.Errorf("COSIGN_PASSWORD is still set")
	}

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "signing"), 0o700); err != nil {
		t.Fatal(err)
	}
	for p, b := range map[string]string{"signing/cosign.key": string(priv), "signing/cosign.password": "pw\n"} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(b), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	o = &options{credentialsDir: dir}
	readable = nil
	if s, err := loadSigner(o, &readable); err != nil || s == nil {
		t.Fatalf("loadSigner from the credentials directory: %v, %v", s, err)
	}
	if len(readable) != 0 {
		t.Errorf("readable %v for a staged key", readable)
	}
}
