// Command gitserve is the demo's git server: it serves the bare repositories under --root with
// Git's smart HTTP protocol (`git http-backend`, pushes allowed) on every --listen address, and
// copies TCP connections from every --forward LISTEN=TARGET to TARGET.
//
// The local cluster's pods sit on a CNI bridge and cannot reach the host's 127.0.0.1, so
// hack/demo.sh listens on the bridge's address as well, and forwards a port there to the
// registry on 127.0.0.1 (hack/registry.sh binds loopback only). It runs until SIGTERM.
//
//	gitserve --root DIR --listen 127.0.0.1:25001 --listen 10.217.0.1:25001 \
//	    --forward 10.217.0.1:25000=127.0.0.1:25000
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var listen, forward list
	root := flag.String("root", "", "Directory of the bare repositories (repository x.git at /x.git).")
	flag.Var(&listen, "listen", "Address to serve git on (repeatable).")
	flag.Var(&forward, "forward", "LISTEN=TARGET: copy TCP connections to LISTEN to TARGET (repeatable).")
	flag.Parse()
	if *root == "" || len(listen) == 0 {
		fmt.Fprintln(os.Stderr, "usage: gitserve --root DIR --listen ADDR... [--forward LISTEN=TARGET...]")
		os.Exit(2)
	}
	git, err := exec.LookPath("git")
	if err != nil {
		log.Fatalf("gitserve: git: %v: install Debian's git", err)
	}
	handler := &cgi.Handler{
		Path: git,
		Args: []string{"http-backend"},
		Env: []string{
			"GIT_PROJECT_ROOT=" + *root,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"HOME=" + *root,
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	errs := make(chan error, len(listen)+len(forward))
	for _, addr := range listen {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatalf("gitserve: %v", err)
		}
		srv := &http.Server{Handler: handler}
		go func() { errs <- srv.Serve(ln) }()
		go func() { <-ctx.Done(); srv.Close() }()
	}
	for _, f := range forward {
		from, to, ok := strings.Cut(f, "=")
		if !ok {
			log.Fatalf("gitserve: --forward %q: want LISTEN=TARGET", f)
		}
		ln, err := net.Listen("tcp", from)
		if err != nil {
			log.Fatalf("gitserve: %v", err)
		}
		go func() { <-ctx.Done(); ln.Close() }()
		go func() { errs <- Forward(ln, to) }()
	}
	log.Printf("gitserve: serving %s on %s; forwarding %s", *root, listen.String(), forward.String())
	select {
	case <-ctx.Done():
	case err := <-errs:
		log.Fatalf("gitserve: %v", err)
	}
}

// Forward accepts connections on ln until it is closed and copies each, both ways, to a new
// connection to target.
func Forward(ln net.Listener, target string) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			t, err := net.Dial("tcp", target)
			if err != nil {
				log.Printf("gitserve: forwarding to %s: %v", target, err)
				return
			}
			defer t.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(t, c); t.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { io.Copy(c, t); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}
