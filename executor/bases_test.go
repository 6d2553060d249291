package main

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/testenv"
)

// TestExecute_resultNamesBases: the result file names the base image of
// the build (FROM $BASE, expanded) with the digest the registry gives for
// its tag, which is what the controller's base-image check compares.
func TestExecute_resultNamesBases(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	reg := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, reg)
	ref, err := name.ParseReference(base)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(ref)
	if err != nil {
		t.Fatal(err)
	}
	b := runExecutor(t, "--context=dir://"+writeDockerfile(t, "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\n"),
		"--no-push", "--insecure-registry="+reg.Host(), "--build-arg=BASE="+base)
	if b.exit != 0 || !b.res.Success {
		t.Fatalf("build failed: exit %d, %s; log:\n%s", b.exit, b.resRaw, b.log)
	}
	want := []result.Base{{Ref: reg.Host() + "/library/busybox:latest", Digest: desc.Digest.String()}}
	if diff := cmp.Diff(want, b.res.Bases); diff != "" {
		t.Errorf("result bases (-want +got)\n%s\nresult: %s", diff, b.resRaw)
	}
}
