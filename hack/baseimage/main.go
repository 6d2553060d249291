// Command baseimage pushes the base images of the demo and the benchmarks
// to a registry and prints their references, one a line:
//
//	go run ./hack/baseimage --registry 127.0.0.1:35000
//	127.0.0.1:35000/library/busybox:latest
//
// The busybox image is test/testenv's BusyboxImage, made from Debian's
// busybox-static, so tests and the demo use the same base (same digest).
// The registry is reached over plain HTTP; credentials, if it needs any,
// come from DOCKER_CONFIG as the executor reads them.
//
// TODO: a larger Debian base (debootstrap --variant=minbase bookworm) for
// the bigbase benchmark, pushed as library/debian:bookworm.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/slipway-dev/slipway/executor/publish"
	"github.com/slipway-dev/slipway/test/testenv"
)

func main() {
	registry := flag.String("registry", os.Getenv("SLIPWAY_REGISTRY"), "the registry's host:port (default $SLIPWAY_REGISTRY)")
	repo := flag.String("busybox", "library/busybox:latest", "the repository and tag of the busybox image")
	flag.Parse()
	if *registry == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: baseimage --registry HOST:PORT [--busybox REPO:TAG]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ref, err := pushBusybox(ctx, *registry, *repo)
	if err != nil {
		fmt.Fprintf(os.Stderr, "baseimage: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(ref)
}

func pushBusybox(ctx context.Context, registry, repo string) (string, error) {
	img, err := testenv.BusyboxImage()
	if err != nil {
		return "", err
	}
	o := publish.RegistryOptions{InsecureRegistries: []string{registry}}
	s := registry + "/" + repo
	ref, err := publish.ParseReference(s, o, true)
	if err != nil {
		return "", err
	}
	if _, err := publish.Push(ctx, img, []name.Reference{ref}, o); err != nil {
		return "", err
	}
	return s, nil
}
