// Command slipway-sbom writes an SBOM of an unpacked image file tree to
// standard output:
//
//	slipway-sbom [--format spdx-json|cyclonedx-json] [--name IMAGE] [--exclude /PATH]... [--max-file-size BYTES] ROOT
//
// It is executor/sbom/scan (anchore/syft, a fixed set of catalogers) as its
// own program, shipped beside the executor in the executor image
// (/slipway/slipway-sbom): the executor's sbom.Generate runs it as a child
// process with a clean environment, a time limit, a memory limit and a cap
// on its output, so that syft's code and memory stay out of the build's.
// It reads only the tree, runs nothing and reaches no network. Errors go
// to standard error, and the exit code is 1 (2 for bad usage).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/slipway-dev/slipway/executor/sbom/scan"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var cfg scan.Config
	var exclude listFlag
	flag.StringVar(&cfg.Format, "format", scan.FormatSPDXJSON, "the document's format: "+scan.FormatSPDXJSON+" or "+scan.FormatCycloneDXJSON)
	flag.StringVar(&cfg.Name, "name", "", "the image's name, the document's subject (default: ROOT)")
	flag.Var(&exclude, "exclude", "an absolute path inside ROOT not to catalog (repeatable)")
	flag.Int64Var(&cfg.MaxFileSize, "max-file-size", scan.DefaultMaxFileSize, "the bytes a cataloger may read from one file")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: slipway-sbom [--format spdx-json|cyclonedx-json] [--name IMAGE] [--exclude /PATH]... [--max-file-size BYTES] ROOT")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	cfg.Exclude = exclude
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	doc, err := scan.Scan(ctx, flag.Arg(0), cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "slipway-sbom: %v\n", err)
		os.Exit(1)
	}
	if _, err := os.Stdout.Write(doc); err != nil {
		fmt.Fprintf(os.Stderr, "slipway-sbom: writing the SBOM: %v\n", err)
		os.Exit(1)
	}
}
