package imageindex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
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
			Manifests: []Manifest{{Platform: "linux/amd64", Digest: amd}, {Platform: "linux/arm/v7", Digest: arm}}})
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
			Manifests: []Manifest{{Platform: "linux/amd64", Digest: amd}, {Platform: "linux/arm64/v8", Digest: arm}}})
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
		res, err := Assemble(ctx, Request{Repository: repo.String(), Tags: []string{"one"}, Manifests: []Manifest{{Platform: "linux/arm64", Digest: arm}}})
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
			Manifests: []Manifest{{Platform: "linux/amd64", Digest: amd}, {Platform: "linux/arm64", Digest: other}}})
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
				Manifests: []Manifest{{Platform: "linux/amd64", Digest: amd}, {Platform: "linux/arm64", Digest: bad}}})
			if _, ok := errors.AsType[*InvalidError](err); !ok {
				t.Errorf("digest %q: err = %v, want an InvalidError", bad, err)
			}
		}
	})

	t.Run("a digest the registry does not have fails, and may be tried again", func(t *testing.T) {
		amd := pushByDigest(t, repo, authn.Anonymous, "linux/amd64", false)
		missing := "sha256:" + strings.Repeat("e", 64)
		_, err := Assemble(ctx, Request{Repository: repo.String(), Tags: []string{"missing"},
			Manifests: []Manifest{{Platform: "linux/amd64", Digest: amd}, {Platform: "linux/arm64", Digest: missing}}})
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
	req := Request{Repository: repo.String(), Tags: []string{"v1"}, Manifests: []Manifest{{Platform: "linux/amd64", Digest: amd}, {Platform: "linux/arm64", Digest: arm}}}

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

// pushPlatformIndex pushes, as an executor run with --custom-platform, --push-by-digest and
// attestations does, an index of the image img (of platform, with an annotation of its own)
// and the attestation manifests atts (BuildKit's descriptors, each about about), by digest,
// and returns its digest.
func pushPlatformIndex(t *testing.T, repo name.Repository, platform, img string, about []string, extra ...v1.Descriptor) string {
	t.Helper()
	h, err := v1.NewHash(img)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(repo.Digest(img))
	if err != nil {
		t.Fatal(err)
	}
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		t.Fatal(err)
	}
	im := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
		MediaType: desc.MediaType, Size: desc.Size, Digest: h, Platform: p,
		Annotations: map[string]string{"org.opencontainers.image.title": "app " + platform},
	}}}
	for _, a := range about {
		att := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		att, err = mutate.Append(att, mutate.Addendum{Layer: static.NewLayer([]byte(`{"about":"`+a+platform+`"}`), "application/vnd.in-toto+json")})
		if err != nil {
			t.Fatal(err)
		}
		ad, _ := att.Digest()
		if err := remote.Write(repo.Digest(ad.String()), att); err != nil {
			t.Fatal(err)
		}
		raw, _ := att.RawManifest()
		im.Manifests = append(im.Manifests, v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: int64(len(raw)), Digest: ad,
			Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{AnnotationReferenceType: ReferenceTypeAttestation, AnnotationReferenceDigest: a}})
	}
	im.Manifests = append(im.Manifests, extra...)
	raw, err := json.Marshal(im)
	if err != nil {
		t.Fatal(err)
	}
	d, _, _ := v1.SHA256(bytes.NewReader(raw))
	if err := remote.Put(repo.Digest(d.String()), rawIndex{raw: raw, mediaType: types.OCIImageIndex}); err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// Platforms that pushed an index with their attestation manifest (BuildKit's layout) make an
// OCI index of every image, then every attestation manifest, each descriptor with the
// annotations its platform's index gave it, as BuildKit lays out a multi-platform build with
// attestations. A platform's index that holds anything else is refused.
func TestAssemble_attestations(t *testing.T) {
	reg := testenv.StartRegistry(t)
	repo, err := name.NewRepository(reg.Ref("team/attested"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	amd := pushByDigest(t, repo, authn.Anonymous, "linux/amd64", true)
	arm := pushByDigest(t, repo, authn.Anonymous, "linux/arm64", true)
	amdIdx := pushPlatformIndex(t, repo, "linux/amd64", amd, []string{amd})
	armIdx := pushPlatformIndex(t, repo, "linux/arm64", arm, []string{arm})

	res, err := Assemble(ctx, Request{Repository: repo.String(), Tags: []string{"v1"},
		Manifests: []Manifest{{Platform: "linux/amd64", Digest: amd, Index: amdIdx}, {Platform: "linux/arm64", Index: armIdx}}})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(repo.Tag("v1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range []string{amd, arm} {
		child, err := idx.Image(v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(img, "sha256:")})
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(child); err != nil {
			t.Errorf("the index's image %s is not valid: %v", img, err)
		}
	}
	im, _ := idx.IndexManifest()
	if res.MediaType != types.OCIImageIndex || im.MediaType != types.OCIImageIndex {
		t.Errorf("media type %s (%s), want an OCI index: it names OCI attestation manifests", res.MediaType, im.MediaType)
	}
	var got []string
	for _, m := range im.Manifests {
		got = append(got, fmt.Sprintf("%s %s %s %s %s", m.Platform, m.Digest, m.Annotations[AnnotationReferenceType],
			m.Annotations[AnnotationReferenceDigest], m.Annotations["org.opencontainers.image.title"]))
	}
	amdAtt, armAtt := attestationOf(t, repo, amdIdx), attestationOf(t, repo, armIdx)
	want := []string{
		"linux/amd64 " + amd + "   app linux/amd64", "linux/arm64 " + arm + "   app linux/arm64",
		"unknown/unknown " + amdAtt + " attestation-manifest " + amd + " ", "unknown/unknown " + armAtt + " attestation-manifest " + arm + " ",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("manifests (-want +got)\n%s", diff)
	}

	other := pushByDigest(t, repo, authn.Anonymous, "linux/arm64", true)
	otherDesc, _ := remote.Get(repo.Digest(other))
	for _, tc := range []struct {
		name  string
		index string
		image string
		want  string
	}{
		{"an attestation about another image", pushPlatformIndex(t, repo, "linux/arm64", arm, []string{other}), "", "not the index's image"},
		{"two attestation manifests", pushPlatformIndex(t, repo, "linux/arm64", arm, []string{arm, arm + ""}), "", "more than 1"},
		{"two images", pushPlatformIndex(t, repo, "linux/arm64", arm, nil, v1.Descriptor{MediaType: otherDesc.MediaType, Size: otherDesc.Size,
			Digest: otherDesc.Digest, Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}), "", "holds 2 images"},
		{"another image than the executor reported", armIdx, other, "which the executor reported"},
		{"an image, not an index", arm, "", "not an image index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Assemble(ctx, Request{Repository: repo.String(), Tags: []string{"bad"},
				Manifests: []Manifest{{Platform: "linux/amd64", Digest: amd, Index: amdIdx}, {Platform: "linux/arm64", Digest: tc.image, Index: tc.index}}})
			if _, ok := errors.AsType[*InvalidError](err); !ok || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want an InvalidError saying %q", err, tc.want)
			}
			if _, err := remote.Head(repo.Tag("bad")); err == nil {
				t.Error("the tag was pushed")
			}
		})
	}
}

// attestationOf is the digest of the attestation manifest of a platform's index.
func attestationOf(t *testing.T, repo name.Repository, index string) string {
	t.Helper()
	idx, err := remote.Index(repo.Digest(index))
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	for _, m := range im.Manifests {
		if IsAttestation(m) {
			return m.Digest.String()
		}
	}
	t.Fatalf("%s has no attestation manifest", index)
	return ""
}
