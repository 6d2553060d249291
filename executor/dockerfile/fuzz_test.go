package dockerfile

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// FuzzParse plans fuzzed Dockerfiles: Parse never panics; it fails with a
// *Error whose line, when it has one, is a line of the file; or it returns
// a plan whose stages build on earlier stages only and whose order holds
// the target last, each stage once, after the stages it needs.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"FROM busybox\nRUN true\nCMD [\"sh\"]\n",
		"FROM busybox AS a\nRUN a\nFROM busybox AS unused\nRUN b\nFROM scratch\nCOPY --from=a /x /x\n",
		"ARG B=busybox\nFROM $B AS base\nARG V\nRUN echo $V\nFROM base\nRUN --mount=type=cache,target=/c --mount=from=base,target=/b true\n",
		"# escape=`\nFROM busybox\nRUN echo `\n  hi\n",
		"# syntax=docker/dockerfile:1\nFROM --platform=$BUILDPLATFORM busybox\nCOPY --chown=1:1 --chmod=755 a b\n",
		"FROM busybox\nONBUILD RUN x\nHEALTHCHECK CMD true\nSHELL [\"/bin/sh\", \"-c\"]\nENV A=1 B=\"2 3\"\nLABEL a=b\nEXPOSE 80/tcp 90-95\nVOLUME /v\nUSER 1:1\nWORKDIR /w\nSTOPSIGNAL TERM\nENTRYPOINT [\"x\"]\n",
		"FROM busybox\nRUN <<EOF\necho hi\nEOF\nCOPY <<EOT /f\ncontent\nEOT\n",
		"FROM busybox AS a\nRUN x\nFROM busybox AS A\n",
		"FROM busybox\nRUN true\nFROB x\n",
		"ARG B\nFROM $B\n",
		"FROM busybox\nCOPY --from=$S /x /x\n",
		"FROM busybox\nRUN true\nCOPY \\\n  --nope=1 \\\n  a b\n",
		"FROM busybox\nADD --keep-git-dir=true https://example.com/r.git /r\nADD --checksum=sha256:00 http://x/y /z\n",
		"FROM busybox\nCOPY --from=0 /x /x\nFROM busybox\nCOPY --from=1 /x /x\n",
	} {
		f.Add([]byte(s), "")
	}
	f.Add([]byte("FROM busybox AS a\nFROM a AS b\nFROM b\n"), "a")
	f.Fuzz(func(t *testing.T, dt []byte, target string) {
		p, err := Parse(dt, Options{Target: target, BuildArgs: map[string]string{"B": "busybox", "V": "1"}})
		lines := bytes.Count(dt, []byte("\n")) + 1
		if err != nil {
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("Parse() = %v (%T), want a *dockerfile.Error", err, err)
			}
			if de.Line < 0 || de.Line > lines {
				t.Fatalf("Parse() = %v: line %d of a file of %d lines", err, de.Line, lines)
			}
			return
		}
		if len(p.Stages) == 0 || p.Target < 0 || p.Target >= len(p.Stages) {
			t.Fatalf("Parse() gave %d stages, target %d", len(p.Stages), p.Target)
		}
		if len(p.Order) == 0 || p.Order[len(p.Order)-1] != p.Target {
			t.Fatalf("order %v does not end with the target %d", p.Order, p.Target)
		}
		seen := map[int]bool{}
		for _, i := range p.Order {
			if i < 0 || i >= len(p.Stages) || seen[i] {
				t.Fatalf("order %v: stage %d out of range or twice", p.Order, i)
			}
			seen[i] = true
			s := p.Stages[i]
			if s.BaseStage >= i {
				t.Fatalf("stage %d builds on stage %d", i, s.BaseStage)
			}
			if s.BaseStage >= 0 && !slices.Contains(p.Order[:slices.Index(p.Order, i)], s.BaseStage) {
				t.Fatalf("order %v: stage %d comes before its base %d", p.Order, i, s.BaseStage)
			}
			if s.Line < 1 || s.Line > lines {
				t.Fatalf("stage %d on line %d of a file of %d lines", i, s.Line, lines)
			}
		}
	})
}
