// Command baseimage pushes the base images of the demo and the benchmarks
// to a registry and prints their references, one a line:
//
//	go run ./hack/baseimage --registry 127.0.0.1:25000
//	127.0.0.1:25000/library/busybox:latest
//
// The busybox image is test/testenv's BusyboxImage, made from Debian's
// busybox-static, so tests and the demo use the same base (same digest).
// The registry is reached over plain HTTP; credentials, if it needs any,
// come from DOCKER_CONFIG as the executor reads them.
//
// With --debian-tarball PATH it also pushes a larger Debian base for the
// bigbase benchmark, library/debian:bookworm: one layer, the gzipped tarball
// at PATH, which it first makes with `debootstrap --variant=minbase bookworm`
// when PATH does not exist (Debian's mirror must be reachable; about 300 MB
// unpacked). Its reference is printed on the second line.
//
// With --multiplatform it pushes only the images of the multiplatform
// benchmark and prints their references, one a line: library/busybox:multi
// (test/testenv's MultiPlatformBusybox, an index of amd64, arm64 and arm/v7
// busybox made from Debian's busybox-static packages) and
// library/golang:host (busybox with this machine's Go toolchain,
// test/testenv's GoImage).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/slipway-dev/slipway/executor/publish"
	"github.com/slipway-dev/slipway/test/testenv"
)

func main() {
	registry := flag.String("registry", os.Getenv("SLIPWAY_REGISTRY"), "the registry's host:port (default $SLIPWAY_REGISTRY)")
	repo := flag.String("busybox", "library/busybox:latest", "the repository and tag of the busybox image")
	debTar := flag.String("debian-tarball", "", "also push a Debian base made from this gzipped rootfs tarball (made with debootstrap when missing)")
	debRepo := flag.String("debian", "library/debian:bookworm", "the repository and tag of the Debian image")
	debSuite := flag.String("debian-suite", "bookworm", "the Debian suite debootstrap installs")
	debMirror := flag.String("debian-mirror", "", "the Debian mirror debootstrap uses (default: debootstrap's)")
	multi := flag.Bool("multiplatform", false, "push only the multiplatform benchmark's images: library/busybox:multi and library/golang:host")
	flag.Parse()
	if *registry == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: baseimage --registry HOST:PORT [--busybox REPO:TAG] [--debian-tarball PATH [--debian REPO:TAG]]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *multi {
		for _, push := range []func(context.Context, string) (string, error){pushMultiBusybox, pushGolang} {
			ref, err := push(ctx, *registry)
			if err != nil {
				fmt.Fprintf(os.Stderr, "baseimage: %v\n", err)
				os.Exit(1)
			}
			fmt.Println(ref)
		}
		return
	}
	// The slow part first: the Debian tarball, when it is to be made.
	if *debTar != "" {
		if err := debianTarball(ctx, *debTar, *debSuite, *debMirror); err != nil {
			fmt.Fprintf(os.Stderr, "baseimage: %v\n", err)
			os.Exit(1)
		}
	}
	ref, err := pushBusybox(ctx, *registry, *repo)
	if err != nil {
		fmt.Fprintf(os.Stderr, "baseimage: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(ref)
	if *debTar != "" {
		ref, err := pushDebian(ctx, *registry, *debRepo, *debTar)
		if err != nil {
			fmt.Fprintf(os.Stderr, "baseimage: %v\n", err)
			os.Exit(1)
		}
		fmt.Println(ref)
	}
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

func pushMultiBusybox(ctx context.Context, registry string) (string, error) {
	idx, err := testenv.MultiPlatformBusybox()
	if err != nil {
		return "", err
	}
	s := registry + "/library/busybox:multi"
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("pushing %s: %w", s, err)
	}
	return s, nil
}

func pushGolang(ctx context.Context, registry string) (string, error) {
	img, err := testenv.GoImage()
	if err != nil {
		return "", err
	}
	o := publish.RegistryOptions{InsecureRegistries: []string{registry}}
	s := registry + "/library/golang:host"
	ref, err := publish.ParseReference(s, o, true)
	if err != nil {
		return "", err
	}
	if _, err := publish.Push(ctx, img, []name.Reference{ref}, o); err != nil {
		return "", err
	}
	return s, nil
}
