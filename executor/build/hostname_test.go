package build_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/result"
)

// buildHostname is fixture.build with a hostname and build args.
func buildHostname(t *testing.T, f *fixture, dockerfile, hostname string, args map[string]string, withCache bool) (v1.Image, *build.Report, error) {
	t.Helper()
	return f.build(t, dockerfile, withCache, func(o *build.Options) {
		o.BuildArgs, o.Hostname = args, hostname
	})
}

// The hostname of RUN steps is Options.Hostname (executor --hostname,
// BuildKit's "hostname" option), unless the build arg
// BUILDKIT_SANDBOX_HOSTNAME names one (BuildKit's dockerui config;
// testDockerfileCheckHostname): uname -n, $HOSTNAME and /etc/hosts (which
// maps it to 127.0.0.1) show it, and no layer keeps the generated
// /etc/hosts. Without either, a step has the host's name.
func TestBuild_hostname(t *testing.T) {
	f := newFixture(t, nil)
	const dockerfile = "FROM {{BASE}}\nRUN uname -n > /uname && echo \"$HOSTNAME\" > /var && cat /etc/hosts > /hosts\n"
	hostName, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		hostname string
		args     map[string]string
		want     string
	}{
		{name: "option", hostname: "bar", want: "bar"},
		{name: "build arg", args: map[string]string{"BUILDKIT_SANDBOX_HOSTNAME": "foo"}, want: "foo"},
		{name: "build arg wins", hostname: "bar", args: map[string]string{"BUILDKIT_SANDBOX_HOSTNAME": "foo"}, want: "foo"},
		{name: "empty build arg", hostname: "bar", args: map[string]string{"BUILDKIT_SANDBOX_HOSTNAME": ""}, want: "bar"},
		{name: "none", want: hostName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, _, err := buildHostname(t, f, dockerfile, tc.hostname, tc.args, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{"/uname", "/var"} {
				if got, _ := fileContent(t, img, p); got != tc.want+"\n" {
					t.Errorf("%s = %q, want %q", p, got, tc.want+"\n")
				}
			}
			hosts, _ := fileContent(t, img, "/hosts")
			hostHosts, err := os.ReadFile("/etc/hosts")
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == hostName {
				if hosts != string(hostHosts) {
					t.Errorf("the step's /etc/hosts is %q, want the host's, %q", hosts, hostHosts)
				}
				return
			}
			if entry := "127.0.0.1\t" + tc.want + "\n"; !strings.HasPrefix(hosts, strings.TrimRight(string(hostHosts), "\n")) || !strings.HasSuffix(hosts, entry) {
				t.Errorf("the step's /etc/hosts is %q, want the host's entries and then %q", hosts, entry)
			}
			if etc, ok := fileContent(t, img, "/etc/hosts"); ok && strings.Contains(etc, tc.want) {
				t.Errorf("the image's /etc/hosts is the step's: %q", etc)
			}
		})
	}
}

// The hostname is in RUN steps' cache keys, as in BuildKit's (ExecOp
// Meta.Hostname), and only when set, so builds without one keep their keys.
func TestBuild_hostnameCacheKey(t *testing.T) {
	f := newFixture(t, nil)
	const dockerfile = "FROM {{BASE}}\nRUN echo hello > /out\n"
	for _, tc := range []struct {
		hostname string
		args     map[string]string
		want     counts
	}{
		{"", nil, counts{0, 1}},
		{"", nil, counts{1, 0}},
		{"foo", nil, counts{0, 1}},
		{"", map[string]string{"BUILDKIT_SANDBOX_HOSTNAME": "foo"}, counts{1, 0}},
		{"bar", nil, counts{0, 1}},
		{"", map[string]string{"BUILDKIT_SANDBOX_HOSTNAME": ""}, counts{1, 0}},
	} {
		_, rep, err := buildHostname(t, f, dockerfile, tc.hostname, tc.args, true)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, cacheCounts(rep)); diff != "" {
			t.Errorf("hostname %q, build args %q: cache counts (-want +got):\n%s", tc.hostname, tc.args, diff)
		}
	}
}

// A hostname the kernel would refuse, or with whitespace that would add
// lines to the step's /etc/hosts, fails the build before any step.
func TestBuild_hostnameInvalid(t *testing.T) {
	f := newFixture(t, nil)
	for _, tc := range []struct {
		hostname string
		args     map[string]string
	}{
		{hostname: strings.Repeat("a", 65)},
		{hostname: "a b"},
		{args: map[string]string{"BUILDKIT_SANDBOX_HOSTNAME": "foo\n10.0.0.1 registry.example.com"}},
	} {
		_, _, err := buildHostname(t, f, "FROM {{BASE}}\nRUN touch /ran\n", tc.hostname, tc.args, false)
		var be *build.Error
		if !errors.As(err, &be) || be.Reason != result.ReasonInvalidArguments || !strings.Contains(err.Error(), "hostname") {
			t.Errorf("hostname %q, build args %q: %v, want an InvalidArguments error about the hostname", tc.hostname, tc.args, err)
		}
	}
}
