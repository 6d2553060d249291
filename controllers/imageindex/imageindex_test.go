package imageindex

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/slipway-dev/slipway/test/testenv"
)

// pushByDigest pushes a small image of platform (os/arch[/variant]) to repo by digest only,
// as an executor run with --push-by-digest does, and returns its digest.
func pushByDigest(t *testing.T, repo name.Repository, auth authn.Authenticator, platform string, oci bool) string {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(platform, "/")
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = parts[0], parts[1]
	if len(parts) == 3 {
		cf.Variant = parts[2]
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	if oci {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(repo.Digest(d.String()), img, remote.WithAuth(auth)); err != nil {
		t.Fatalf("pushing %s by digest: %v", platform, err)
	}
	return d.String()
}

func TestAssemble(t *testing.T) {
	reg := testenv.StartRegistry(t)
	repo, err := name.NewRepository(reg.Ref("team/app"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("Docker manifests make a Docker manifest list under every tag", func(t *testing.T) {
		amd := pushByDigest(t, repo, authn.Anonymous, "linux/amd64", false)
		arm := pushByDigest(t, repo, authn.Anonymous, "linux/arm/v7", false)
		res, err := Assemble(ctx, Request{Repository: repo.String(), Tags: []string{"v1", "main-1"},
			Manifests: []Manifest{{"linux/amd64", amd}, {"linux/arm/v7", arm}}})
		if err != nil {
			t.Fatal(err)
		}
		if res.MediaType != types.DockerManifestList {
			t.Errorf("media type = %s, want %s", res.MediaType, types.DockerManifestList)
		}
		want := []string{repo.String() + ":v1@" + res.Digest, repo.String() + ":main-1@" + res.Digest}
		if diff := cmp.Diff(want, res.References); diff != "" {
			t.Errorf("references (-want +got)\n%s", diff)
		}
		for _, tag := range []string{"v1", "main-1"} {
			idx, err := remote.Index(repo.Tag(tag))
			if err != nil {
				t.Fatalf("reading %s: %v", tag, err)
			}
			if err := validate.Index(idx); err != nil {
				t.Errorf("index %s is not valid: %v", tag, err)
			}
			d, _ := idx.Digest()
			if d.String() != res.Digest {
				t.Errorf("%s names %s, want %s", tag, d, res.Digest)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range im.Manifests {
				got = append(got, m.Platform.String()+"="+m.Digest.String()+"/"+string(m.MediaType))
			}
			wantM := []string{"linux/amd64=" + amd + "/" + string(types.DockerManifestSchema2),
				"linux/arm/v7=" + arm + "/" + string(types.DockerManifestSchema2)}
			if diff := cmp.Diff(wantM, got); diff != "" {
				t.Errorf("%s manifests (-want +got)\n%s", tag, diff)
			}
		}
	})

	t.Run("OCI manifests make an OCI index; arm64/v8 is arm64", func(t *testing.T) {
		amd := pushByDigest(t, repo, authn.Anonymous, "linux/amd64", true)
		arm := pushByDigest(t, repo, authn.Anonymous, "linux/arm64", true)
		res, err := Assemble(ctx, Request{Repository: repo.String(), Tags: []string{"oci"},
			Manifests: []Manifest{{"linux/amd64", amd}, {"linux/arm64/v8", arm}}})
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Get(repo.Tag("oci"))
		if err != nil {
			t.Fatal(err)
		}
		if res.MediaType != types.OCIImageIndex || desc.MediaType != types.OCIImageIndex || desc.Digest.String() != res.Digest {
			t.Errorf("pushed %s %s, result %s %s; want an OCI index", desc.MediaType, desc.Digest, res.MediaType, res.Digest)
		}
	})

	t.Run("one platform makes an index of one manifest", func(t *testing.T) {
		arm := pushByDigest(t, repo, authn.Anonymous, "linux/arm64", false)
		res, err := Assemble(ctx, Request{Repository: repo.String(), Tags: []string{"one"}, Manifests: []Manifest{{"linux/arm64", arm}}})
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Index(repo.Tag("one"))
		if err != nil {
			t.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != arm || res.MediaType != types.DockerManifestList {
			t.Errorf("index %+v (%v), result %+v; want a manifest list of %s", im, err, res, arm)
		}
	})

	t.Run("an image of another platform is refused and nothing is tagged", func(t *testing.T) {
		amd := pushByDigest(t, repo, authn.Anonymous, "linux/amd64", false)
		other := pushByDigest(t, repo, authn.Anonymous, "linux/amd64", false)
		_, err := Assemble(ctx, Request{Repository: repo.String(), Tags: []string{"liar"},
			Manifests: []Manifest{{"linux/amd64", amd}, {"linux/arm64", other}}})
		var inv *InvalidError
		if !errors.As(err, &inv) || !strings.Contains(err.Error(), "is for linux/amd64, not linux/arm64") {
			t.Fatalf("err = %v, want an InvalidError naming both platforms", err)
		}
		if Retryable(err) {
			t.Error("Retryable = true for an image of the wrong platform")
		}
		if _, err := remote.Head(repo.Tag("liar")); err == nil {
			t.Error("the tag was pushed although the index was refused")
		}
	})

	t.Run("an index or a made-up digest is refused", func(t *testing.T) {
		amd := pushByDigest(t, repo, authn.Anonymous, "linux/amd64", false)
		idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		d, _ := idx.Digest()
		if err := remote.WriteIndex(repo.Digest(d.String()), idx); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{d.String(), "sha256:abc", "md5:" + strings.Repeat("0", 32), "../../etc"} {
			_, err := Assemble(ctx, Request{Repository: repo.String(), Tags: []string{"bad"},
				Manifests: []Manifest{{"linux/amd64", amd}, {"linux/arm64", bad}}})
			if _, ok := errors.AsType[*InvalidError](err); !ok {
				t.Errorf("digest %q: err = %v, want an InvalidError", bad, err)
			}
		}
	})

	t.Run("a digest the registry does not have fails, and may be tried again", func(t *testing.T) {
		amd := pushByDigest(t, repo, authn.Anonymous, "linux/amd64", false)
		missing := "sha256:" + strings.Repeat("e", 64)
		_, err := Assemble(ctx, Request{Repository: repo.String(), Tags: []string{"missing"},
			Manifests: []Manifest{{"linux/amd64", amd}, {"linux/arm64", missing}}})
		if err == nil || !strings.Contains(err.Error(), "no such manifest") || !Retryable(err) {
			t.Errorf("err = %v (retryable %v), want a retryable 'no such manifest'", err, Retryable(err))
		}
		if _, err := remote.Head(repo.Tag("missing")); err == nil {
			t.Error("the tag was pushed although a manifest was missing")
		}
	})
}

// The index is read and pushed with the keychain's credentials, and no error shows them.
func TestAssemble_credentials(t *testing.T) {
	const user, password = "builder", "s3cret-Pa55word"
	reg := testenv.StartRegistry(t, testenv.WithBasicAuth(user, password))
	repo, err := name.NewRepository(reg.Ref("team/app"))
	if err != nil {
		t.Fatal(err)
	}
	amd := pushByDigest(t, repo, reg.Auth(), "linux/amd64", false)
	arm := pushByDigest(t, repo, reg.Auth(), "linux/arm64", false)
	req := Request{Repository: repo.String(), Tags: []string{"v1"}, Manifests: []Manifest{{"linux/amd64", amd}, {"linux/arm64", arm}}}

	for _, tc := range []struct {
		name string
		kc   authn.Keychain
		want string
	}{
		{"anonymous", nil, "the registry requires credentials"},
		{"wrong password", keychain{&authn.Basic{Username: user, Password: "not-" + password}}, "the registry refused the credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := req
			req.Keychain = tc.kc
			_, err := Assemble(context.Background(), req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), password) || Retryable(err) {
				t.Errorf("err = %v (retryable %v): shows the password, or is retried", err, Retryable(err))
			}
		})
	}
	req.Keychain = keychain{reg.Auth()}
	res, err := Assemble(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(repo.Tag("v1"), remote.WithAuth(reg.Auth()))
	if err != nil || desc.Digest.String() != res.Digest {
		t.Errorf("HEAD v1 = %v, %v; want %s", desc, err, res.Digest)
	}
}

// keychain gives a for every registry.
type keychain struct{ a authn.Authenticator }

func (k keychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.a, nil }
