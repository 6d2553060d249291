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
//
// With ROOT "-" it is started ahead of its tree: it first builds syft's
// license classifier (scan.Prepare, most of a run's fixed cost), then reads
// one request from standard input, a JSON object on one line,
// {"root": "/path", "name": "IMAGE"} (name, when given, replacing --name),
// and writes that tree's document. Standard input closed before a request
// ends it without output and with exit code 0: the tree was not needed.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/slipway-dev/slipway/executor/sbom/scan"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// request is what slipway-sbom reads with ROOT "-".
type request struct {
	Root string `json:"root"`
	Name string `json:"name"`
}

// maxRequest bounds a request line: a path and an image name.
const maxRequest = 64 << 10

func main() {
	var cfg scan.Config
	var exclude listFlag
	flag.StringVar(&cfg.Format, "format", scan.FormatSPDXJSON, "the document's format: "+scan.FormatSPDXJSON+" or "+scan.FormatCycloneDXJSON)
	flag.StringVar(&cfg.Name, "name", "", "the image's name, the document's subject (default: ROOT)")
	flag.Var(&exclude, "exclude", "an absolute path inside ROOT not to catalog (repeatable)")
	flag.Int64Var(&cfg.MaxFileSize, "max-file-size", scan.DefaultMaxFileSize, "the bytes a cataloger may read from one file")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: slipway-sbom [--format spdx-json|cyclonedx-json] [--name IMAGE] [--exclude /PATH]... [--max-file-size BYTES] ROOT|-")
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
	root := flag.Arg(0)
	if root == "-" {
		var err error
		if ctx, err = scan.Prepare(ctx); err != nil {
			fail(err)
		}
		req, err := readRequest(os.Stdin)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			fail(err)
		}
		root = req.Root
		if req.Name != "" {
			cfg.Name = req.Name
		}
	}
	doc, err := scan.Scan(ctx, root, cfg)
	if err != nil {
		fail(err)
	}
	if _, err := os.Stdout.Write(doc); err != nil {
		fail(fmt.Errorf("writing the SBOM: %w", err))
	}
}

// readRequest reads one request line; io.EOF when the input ends first.
func readRequest(r io.Reader) (request, error) {
	line, err := bufio.NewReader(io.LimitReader(r, maxRequest)).ReadBytes('\n')
	if len(line) == 0 && errors.Is(err, io.EOF) {
		return request{}, io.EOF
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return request{}, fmt.Errorf("reading the request: %w", err)
	}
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return request{}, fmt.Errorf("reading the request: %w", err)
	}
	if req.Root == "" {
		return request{}, errors.New("reading the request: no root")
	}
	return req, nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "slipway-sbom: %v\n", err)
	os.Exit(1)
}
