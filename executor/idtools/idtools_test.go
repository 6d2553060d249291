package idtools

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1001:App:/home/app:/bin/sh
nohome:x:1002:1002:::/bin/sh
`

const testGroup = `root:x:0:
daemon:x:1:
staff:x:50:app,daemon
app:x:1001:
wheel:x:10:app
other:x:2000:
`

// newRoot writes an image root with the given passwd and group files; an
// empty string leaves the file out.
func newRoot(t *testing.T, passwd, group string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"passwd": passwd, "group": group} {
		if content == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestResolveUser(t *testing.T) {
	root := newRoot(t, testPasswd, testGroup)
	tests := []struct {
		name    string
		spec    string
		want    User
		wantErr string
	}{
		{name: "empty is root, with root's home", spec: "", want: User{Home: "/root"}},
		{name: "root by name", spec: "root", want: User{Home: "/root"}},
		{name: "name gets primary group and supplementary groups", spec: "app", want: User{UID: 1000, GID: 1001, Groups: []uint32{50, 10}, Home: "/home/app"}},
		{name: "uid with passwd entry", spec: "1000", want: User{UID: 1000, GID: 1001, Groups: []uint32{50, 10}, Home: "/home/app"}},
		{name: "uid without passwd entry has gid 0", spec: "4242", want: User{UID: 4242, Home: "/"}},
		{name: "name:group", spec: "app:other", want: User{UID: 1000, GID: 2000, Home: "/home/app"}},
		{name: "name:gid", spec: "app:77", want: User{UID: 1000, GID: 77, Home: "/home/app"}},
		{name: "uid:gid fast path", spec: "1000:77", want: User{UID: 1000, GID: 77, Home: "/home/app"}},
		{name: "uid:gid unknown uid", spec: "4242:4242", want: User{UID: 4242, GID: 4242, Home: "/"}},
		{name: "uid:group", spec: "4242:staff", want: User{UID: 4242, GID: 50, Home: "/"}},
		{name: "empty home field falls back to /", spec: "nohome", want: User{UID: 1002, GID: 1002, Home: "/"}},
		{name: "unknown name", spec: "nobody", wantErr: "unable to find user nobody"},
		{name: "unknown group", spec: "app:nogroup", wantErr: "unable to find group nogroup"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveUser(root, tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ResolveUser(%q) error = %v, want one containing %q", tc.spec, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveUser(%q): %v", tc.spec, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ResolveUser(%q) mismatch (-want +got):\n%s", tc.spec, diff)
			}
		})
	}
}

func TestResolveUser_noFiles(t *testing.T) {
	root := newRoot(t, "", "")
	tests := []struct {
		name    string
		spec    string
		want    User
		wantErr string
	}{
		{name: "empty is root", spec: "", want: User{Home: "/"}},
		{name: "numeric uid", spec: "1000", want: User{UID: 1000, Home: "/"}},
		{name: "numeric uid:gid", spec: "1000:1000", want: User{UID: 1000, GID: 1000, Home: "/"}},
		{name: "name", spec: "app", wantErr: "unable to find user app"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveUser(root, tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ResolveUser(%q) error = %v, want one containing %q", tc.spec, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveUser(%q): %v", tc.spec, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ResolveUser(%q) mismatch (-want +got):\n%s", tc.spec, diff)
			}
		})
	}
}

// TestResolveUser_symlinkedPasswd checks that an absolute symlink in the image
// is resolved inside the image, never on the host.
func TestResolveUser_symlinkedPasswd(t *testing.T) {
	root := newRoot(t, "", testGroup)
	if err := os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/lib/passwd"), []byte("img:x:7:8::/img:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/lib/passwd", filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	got, err := ResolveUser(root, "img")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(User{UID: 7, GID: 8, Home: "/img"}, got); diff != "" {
		t.Errorf("ResolveUser mismatch (-want +got):\n%s", diff)
	}
}

func TestResolveChown(t *testing.T) {
	root := newRoot(t, testPasswd, testGroup)
	empty := newRoot(t, "", "")
	tests := []struct {
		name    string
		root    string
		spec    string
		wantUID int
		wantGID int
		wantErr string
	}{
		{name: "numeric uid alone uses uid as gid", root: root, spec: "1000", wantUID: 1000, wantGID: 1000},
		{name: "numeric uid with no passwd", root: empty, spec: "4242", wantUID: 4242, wantGID: 4242},
		{name: "name alone uses primary group", root: root, spec: "app", wantUID: 1000, wantGID: 1001},
		{name: "name with empty group", root: root, spec: "app:", wantUID: 1000, wantGID: 1001},
		{name: "uid:gid", root: empty, spec: "10:20", wantUID: 10, wantGID: 20},
		{name: "name:group", root: root, spec: "app:staff", wantUID: 1000, wantGID: 50},
		{name: "uid:group", root: root, spec: "33:wheel", wantUID: 33, wantGID: 10},
		{name: "name:gid", root: root, spec: "daemon:5", wantUID: 1, wantGID: 5},
		{name: "root is numeric without passwd", root: empty, spec: "root:root", wantUID: 0, wantGID: 0},
		{name: "empty user", root: root, spec: ":staff", wantUID: 0, wantGID: 50},
		{name: "unknown user", root: root, spec: "ghost", wantErr: "unable to find user ghost"},
		{name: "unknown group", root: root, spec: "app:ghosts", wantErr: "unable to find group ghosts"},
		{name: "name without passwd", root: empty, spec: "app", wantErr: "unable to find user app"},
		{name: "empty spec", root: root, spec: "", wantErr: "empty user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			uid, gid, err := ResolveChown(tc.root, tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ResolveChown(%q) error = %v, want one containing %q", tc.spec, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveChown(%q): %v", tc.spec, err)
			}
			if diff := cmp.Diff([2]int{tc.wantUID, tc.wantGID}, [2]int{uid, gid}); diff != "" {
				t.Errorf("ResolveChown(%q) uid,gid mismatch (-want +got):\n%s", tc.spec, diff)
			}
		})
	}
}

// The default user (an empty USER) is root even when /etc/passwd cannot be
// read, as BuildKit's GetUser has it; its home is then "/".
func TestResolveUser_defaultUnreadablePasswd(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc", "passwd"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := ResolveUser(root, "")
	if err != nil {
		t.Fatalf("ResolveUser: %v", err)
	}
	if diff := cmp.Diff(User{Home: "/"}, got); diff != "" {
		t.Errorf("ResolveUser (-want +got):\n%s", diff)
	}
	if _, err := ResolveUser(root, "0"); err == nil {
		t.Error("ResolveUser(0) with /etc/passwd a directory: no error")
	}
}
