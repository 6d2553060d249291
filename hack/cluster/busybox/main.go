// Command busybox writes the busybox image of test/testenv (Debian's busybox-static: /bin/sh
// and the usual applets) as a `docker save` tarball, which `ctr images import` reads. It is the
// helper image of the local cluster's local-path-provisioner (hack/cluster.sh), whose helper
// pods run sh to make and remove the volumes' directories on the node: no image can be
// downloaded on our machines.
//
//	go run ./hack/cluster/busybox -o busybox.tar -ref localhost/slipway/busybox:1
//	ctr -n k8s.io images import busybox.tar
//
// The image's digest depends only on the busybox binary (testenv.BusyboxImage).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/slipway-dev/slipway/test/testenv"
)

func main() {
	out := flag.String("o", "", "the tarball to write")
	ref := flag.String("ref", "localhost/slipway/busybox:1", "the image name and tag in the tarball")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: busybox -o PATH [-ref NAME:TAG]")
		os.Exit(2)
	}
	if err := write(*out, *ref); err != nil {
		fmt.Fprintf(os.Stderr, "busybox: %v\n", err)
		os.Exit(1)
	}
}

func write(path, ref string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("parsing %q: %w", ref, err)
	}
	img, err := testenv.BusyboxImage()
	if err != nil {
		return err
	}
	// Beside the target, then renamed: an import never reads half a tarball.
	tmp := path + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}
