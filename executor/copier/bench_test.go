package copier

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkWalkSourcesKey is what a cached COPY . of a context of many
// small files costs before its lookup: the walk, the digests and the key.
func BenchmarkWalkSourcesKey(b *testing.B) {
	dir := b.TempDir()
	content := make([]byte, 2048)
	for d := range 50 {
		sub := filepath.Join(dir, "src", fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := range 200 {
			content[0], content[1] = byte(d), byte(f)
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%03d.txt", f)), content[:200+(d*7+f*13)%1800], 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		_, files, err := WalkSources(ctx, Request{SrcRoot: dir, Sources: []string{"."}, Dest: "/app/"})
		if err != nil {
			b.Fatal(err)
		}
		KeyOf(files)
	}
}
