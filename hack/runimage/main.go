// Command runimage pulls an image and runs its Entrypoint and Cmd in a
// chroot inside fresh namespaces (test/imagetest.Run), printing what it
// writes: the demo's way to show that the image it built works, with no
// container runtime on the machine.
//
//	go run ./hack/runimage [--insecure] REF
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
	"github.com/slipway-dev/slipway/executor/run"
	"github.com/slipway-dev/slipway/test/imagetest"
)

func main() {
	run.Init()
	insecure := flag.Bool("insecure", false, "pull over plain HTTP")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: runimage [--insecure] REF")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := runImage(ctx, flag.Arg(0), *insecure); err != nil {
		fmt.Fprintf(os.Stderr, "runimage: %v\n", err)
		os.Exit(1)
	}
}

func runImage(ctx context.Context, s string, insecure bool) error {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(s, opts...)
	if err != nil {
		return err
	}
	img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(publish.DefaultKeychain))
	if err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	out, err := imagetest.Run(ctx, img, imagetest.RunOptions{})
	fmt.Print(out)
	return err
}
