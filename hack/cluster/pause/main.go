// Command pause is the pod sandbox ("pause") image of the one-machine cluster of
// hack/cluster.sh, since no pause image can be downloaded on our machines.
//
// Run as /pause with no arguments (in a pod sandbox) it waits until SIGINT or SIGTERM, reaping
// the zombies it inherits as PID 1 of a shared PID namespace, like Kubernetes' pause.
//
// Run with -image it writes an image holding itself as /pause, in the `docker save` tarball
// format that `ctr images import` reads:
//
//	CGO_ENABLED=0 go build -trimpath -ldflags=-s -o pause ./hack/cluster/pause
//	./pause -image pause.tar -ref localhost/slipway/pause:1
//	ctr -n k8s.io images import pause.tar
//
// The binary must be static (CGO_ENABLED=0): the image holds nothing else. The tarball is
// reproducible: the same binary gives the same image digest.
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

func main() {
	image := flag.String("image", "", "write an image tarball holding this binary as /pause to this path, and exit")
	ref := flag.String("ref", "localhost/slipway/pause:1", "the image name and tag (with -image)")
	flag.Parse()
	if *image == "" {
		pause()
		return
	}
	if err := writeImage(*image, *ref); err != nil {
		fmt.Fprintf(os.Stderr, "pause: %v\n", err)
		os.Exit(1)
	}
}

func pause() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

// epoch is the time of every entry and of the image: a fixed one, for a reproducible digest.
var epoch = time.Unix(0, 0).UTC()

func writeImage(path, ref string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		return err
	}

	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	if err := lw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(bin)),
		ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	if _, err := lw.Write(bin); err != nil {
		return err
	}
	if err := lw.Close(); err != nil {
		return err
	}
	layerDigest := sha256.Sum256(layer.Bytes())
	layerHex := hex.EncodeToString(layerDigest[:])

	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config":       map[string]any{"Entrypoint": []string{"/pause"}, "User": "65535:65535"},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerHex}},
		"history":      []map[string]any{{"created": epoch.Format(time.RFC3339), "created_by": "hack/cluster/pause"}},
	})
	if err != nil {
		return err
	}
	configDigest := sha256.Sum256(config)
	configName := hex.EncodeToString(configDigest[:]) + ".json"
	layerName := layerHex + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{
		"Config": configName, "RepoTags": []string{ref}, "Layers": []string{layerName},
	}})
	if err != nil {
		return err
	}

	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, e := range []struct {
		name string
		data []byte
	}{{configName, config}, {layerName, layer.Bytes()}, {"manifest.json", manifest}} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)),
			ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			f.Close()
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
