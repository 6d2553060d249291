package build

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTopmost(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"nested", []string{"app", "app/a", "app/b/c", "app/b"}, []string{"app"}},
		{"siblings sharing a prefix", []string{"app/y", "app", "app-x", "app-x/z"}, []string{"app", "app-x"}},
		{"separate trees", []string{"etc/app/a.conf", "srv/app/x"}, []string{"etc/app/a.conf", "srv/app/x"}},
		{"duplicates", []string{"a/b", "a/b"}, []string{"a/b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, topmost(tc.in)); diff != "" {
				t.Errorf("topmost(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}
