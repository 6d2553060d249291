package build

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/dfgitutil"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	digest "github.com/opencontainers/go-digest"

	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/source"
)

// sourceDateEpochArg is the build argument that dates a reproducible build.
const sourceDateEpochArg = "SOURCE_DATE_EPOCH"

// resolveSourceDateEpoch dates the build as BuildKit's Dockerfile frontend
// does (dockerfile2llb toDispatchState: getBuildArgValue,
// resolveSourceDateEpochValue, setBuildArgValue). SOURCE_DATE_EPOCH is the
// build arg, or else the Dockerfile's global ARG of that name when its
// value is not empty. Its value is one of:
//   - seconds since the Unix epoch;
//   - "context": the build context's time (Options.ContextTime: a git
//     context's commit time); a local context has none, and the build then
//     has no epoch;
//   - the name of a source-only stage (FROM scratch, ARGs and one ADD of an
//     http(s) URL or a git repository): the URL's Last-Modified time, else
//     the newest regular file's time in the archive it serves; the commit
//     time of the git repository at its ref.
//
// Anything else fails the build ("invalid SOURCE_DATE_EPOCH: VALUE"), at
// the line of the global ARG when the value is the Dockerfile's, at the
// stage when the stage is not source-only. BuildKit's named contexts do not
// exist here.
//
// The time found sets o.SourceDateEpoch, and replaces the value wherever it
// was set (build arg, global ARG), so that `ARG SOURCE_DATE_EPOCH` in a
// stage reads the seconds; a value that gives no time is removed from both,
// and o.SourceDateEpoch stays as the caller set it (executor
// --reproducible).
//
// plans are the build's plans, one per platform: the first resolves the
// value, and each gets it.
func resolveSourceDateEpoch(ctx context.Context, o *Options, plans []*dockerfile.Plan) error {
	plan := plans[0]
	v, fromArg := o.BuildArgs[sourceDateEpochArg]
	line := 0
	if !fromArg {
		gv, ok := plan.GlobalArgs.Get(sourceDateEpochArg)
		if !ok || gv == "" {
			return nil
		}
		v, line = gv, plan.MetaArgLines[sourceDateEpochArg]
	}
	epoch, how, err := sourceDateEpochValue(ctx, o, plan, v)
	if err != nil {
		var be *Error
		if errors.As(err, &be) {
			return err
		}
		if fromArg {
			return &Error{Reason: result.ReasonInvalidArguments, Err: fmt.Errorf("--build-arg %s=%s: %w", sourceDateEpochArg, v, err)}
		}
		return &Error{Reason: result.ReasonDockerfileInvalid, Line: line, Err: err}
	}
	formatted := ""
	if epoch != nil {
		formatted = strconv.FormatInt(epoch.Unix(), 10)
		o.SourceDateEpoch = epoch
	}
	if how != "" {
		if epoch != nil {
			fmt.Fprintf(o.Log, "%s=%s is %s (%s)\n", sourceDateEpochArg, result.Excerpt(v, 80), formatted, how)
		} else {
			fmt.Fprintf(o.Log, "%s=%s sets no time: %s\n", sourceDateEpochArg, result.Excerpt(v, 80), how)
		}
	}
	if fromArg {
		args := make(map[string]string, len(o.BuildArgs))
		for k, v := range o.BuildArgs {
			args[k] = v
		}
		if formatted == "" {
			delete(args, sourceDateEpochArg)
		} else {
			args[sourceDateEpochArg] = formatted
		}
		o.BuildArgs = args
	}
	for _, plan := range plans {
		if _, ok := plan.GlobalArgs.Get(sourceDateEpochArg); ok {
			plan.GlobalArgs = withArg(plan.GlobalArgs, sourceDateEpochArg, formatted)
		}
	}
	return nil
}

// withArg is env with k set to v, or without k when v is empty.
func withArg(env *dockerfile.Env, k, v string) *dockerfile.Env {
	out := &dockerfile.Env{}
	for _, key := range env.Keys() {
		switch {
		case key != k:
			out.Set(key, env.MustGet(key))
		case v != "":
			out.Set(key, v)
		}
	}
	return out
}

// sourceDateEpochValue resolves one SOURCE_DATE_EPOCH value (BuildKit's
// resolveSourceDateEpochValue and resolveSourceDateEpochState); how says
// where a time that is not a number came from, for the log.
func sourceDateEpochValue(ctx context.Context, o *Options, plan *dockerfile.Plan, v string) (epoch *time.Time, how string, err error) {
	if v == "" {
		return nil, "", nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		t := time.Unix(n, 0).UTC()
		return &t, "", nil
	}
	if v == "context" {
		if o.ContextTime == nil {
			return nil, "the build context is local, it has no time of its own", nil
		}
		t := o.ContextTime.UTC()
		return &t, "the git context's commit time", nil
	}
	for _, st := range plan.Stages {
		if st.Name != "" && strings.EqualFold(st.Name, v) {
			return stageSourceDateEpoch(ctx, o, plan, st)
		}
	}
	return nil, "", fmt.Errorf("invalid %s: %s (want seconds since the Unix epoch, \"context\" or the name of a source-only stage)", sourceDateEpochArg, v)
}

// stageSourceDateEpoch is the time of the one remote source of stage st,
// which must be source-only (BuildKit's sourceDateEpochStageSource,
// sourceDateEpochAddSource and resolveSourceDateEpochFromState). The stage
// itself is not built for it: it is built only if the target needs it. Its
// words are expanded with the global args (SOURCE_DATE_EPOCH left out) and
// its own ARGs.
func stageSourceDateEpoch(ctx context.Context, o *Options, plan *dockerfile.Plan, st *dockerfile.Stage) (*time.Time, string, error) {
	atStage := func(reason result.Reason, err error) error {
		return &Error{Reason: reason, Line: st.Line, Instruction: st.Source, Err: err}
	}
	invalid := func(err error) (*time.Time, string, error) {
		return nil, "", atStage(result.ReasonDockerfileInvalid, err)
	}
	if !strings.EqualFold(st.Base, dockerfile.Scratch) {
		return invalid(errors.New("SOURCE_DATE_EPOCH stage must use FROM scratch"))
	}
	env := withArg(plan.GlobalArgs, sourceDateEpochArg, "")
	var add *instructions.AddCommand
	for _, cmd := range st.Commands {
		switch c := cmd.(type) {
		case *instructions.ArgCommand:
			// BuildKit's applySourceDateEpochStageArgs: a build arg, else
			// the default expanded; no default leaves the name as it is.
			for _, kv := range c.Args {
				if bv, ok := o.BuildArgs[kv.Key]; ok {
					env.Set(kv.Key, bv)
					continue
				}
				if kv.Value == nil {
					continue
				}
				val, _, err := plan.Lex.ProcessWord(*kv.Value, env)
				if err != nil {
					return invalid(fmt.Errorf("expanding ARG %s: %w", kv.Key, err))
				}
				env.Set(kv.Key, val)
			}
		case *instructions.AddCommand:
			if add != nil {
				return invalid(errors.New("SOURCE_DATE_EPOCH stage must contain exactly one remote ADD"))
			}
			add = c
		default:
			return invalid(fmt.Errorf("SOURCE_DATE_EPOCH stage does not meet source-only requirements: unsupported %s instruction", cmd.Name()))
		}
	}
	if add == nil {
		return invalid(errors.New("SOURCE_DATE_EPOCH stage must contain exactly one remote ADD"))
	}
	if len(add.SourceContents) != 0 || len(add.SourcePaths) != 1 {
		return invalid(errors.New("SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source"))
	}
	src, _, err := plan.Lex.ProcessWord(add.SourcePaths[0], env)
	if err != nil {
		return invalid(fmt.Errorf("expanding the ADD source: %w", err))
	}
	checksum := ""
	if add.Checksum != "" {
		if checksum, _, err = plan.Lex.ProcessWord(add.Checksum, env); err != nil {
			return invalid(fmt.Errorf("expanding ADD --checksum: %w", err))
		}
	}
	if isHTTPSource(src) {
		var want digest.Digest
		if checksum != "" {
			if want, err = digest.Parse(checksum); err != nil {
				return invalid(fmt.Errorf("ADD --checksum=%s: %w", checksum, err))
			}
		}
		t, how, err := httpSourceTime(ctx, o.HTTPClient, src, want)
		if err != nil {
			return nil, "", atStage(result.ReasonSourceFetchFailed, err)
		}
		return t, how, nil
	}
	ref, isGit, gitErr := dfgitutil.ParseGitRef(src)
	if gitErr != nil && isGit {
		return invalid(fmt.Errorf("%s: %w", source.RedactURL(src), gitErr))
	}
	if gitErr == nil && !ref.IndistinguishableFromLocal {
		if checksum == "" {
			checksum = ref.Checksum
		}
		t, how, err := gitSourceTime(ctx, o, ref, checksum)
		if err != nil {
			return nil, "", atStage(result.ReasonSourceFetchFailed, err)
		}
		return t, how, nil
	}
	return invalid(errors.New("SOURCE_DATE_EPOCH stage source must be a single HTTP(S) or Git ADD"))
}

// httpSourceTime is the time of an ADD URL, as BuildKit's
// resolveSourceDateEpochFromState takes it: its Last-Modified header, else
// the newest time of a regular file in the (possibly compressed) tar
// archive it serves (archiveMaxTimeFromRef), else none. With a checksum the
// whole content is read and must match it.
func httpSourceTime(ctx context.Context, client *http.Client, rawURL string, want digest.Digest) (*time.Time, string, error) {
	shown := source.RedactURL(rawURL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, "", fmt.Errorf("fetching %s: not a valid URL", shown)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("fetching %s: %w", shown, withoutURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return nil, "", fmt.Errorf("fetching %s: invalid response status %d %s", shown, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	var body io.Reader = resp.Body
	var verifier digest.Verifier
	if want != "" {
		verifier = want.Verifier()
		body = io.TeeReader(body, verifier)
	}
	var epoch *time.Time
	how := ""
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		t = t.UTC()
		epoch, how = &t, "the Last-Modified time of "+shown
	} else {
		epoch = archiveMaxTime(body)
		if epoch != nil {
			how = "the newest file in the archive " + shown
		} else {
			how = shown + " has no Last-Modified time and is no archive"
		}
	}
	if verifier != nil {
		if _, err := io.Copy(io.Discard, body); err != nil {
			return nil, "", fmt.Errorf("fetching %s: %w", shown, err)
		}
		if !verifier.Verified() {
			return nil, "", fmt.Errorf("fetching %s: the content does not match --checksum=%s", shown, want)
		}
	}
	return epoch, how, nil
}

// isHTTPSource is BuildKit's: an http(s) URL that is not a git
// repository (https://host/org/repo.git is one).
func isHTTPSource(src string) bool {
	if !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		return false
	}
	ref, isGit, _ := dfgitutil.ParseGitRef(src)
	return ref == nil || !isGit
}

// withoutURLError drops the URL (which may hold user info) that net/http
// puts in its errors.
func withoutURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// archiveMaxTime is the newest modification time of a regular file in the
// tar archive r, compressed or not; nil when r is no archive or holds no
// regular file (BuildKit's archiveMaxTimeFromRef with allowNonArchive).
func archiveMaxTime(r io.Reader) *time.Time {
	dr, _, done, err := source.Decompress(r)
	if err != nil {
		return nil
	}
	defer done()
	tr := tar.NewReader(dr)
	var newest *time.Time
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return newest
		}
		if err != nil {
			return nil
		}
		if !hdr.FileInfo().Mode().IsRegular() {
			continue
		}
		t := hdr.ModTime.UTC()
		if newest == nil || t.After(*newest) {
			newest = &t
		}
	}
}

// gitSourceTime is the committer time of the commit a git ADD source names
// (BuildKit resolves its metadata with the commit object): the repository
// is fetched at the ref, with the credentials Options.GitAuth scopes to it,
// into the work directory, and removed again. checksum, when set, is the
// commit (or a prefix of it) the ref must name.
func gitSourceTime(ctx context.Context, o *Options, ref *dfgitutil.GitRef, checksum string) (*time.Time, string, error) {
	shown := source.RedactURL(ref.Remote)
	if checksum != "" && !commitHex.MatchString(checksum) {
		return nil, "", fmt.Errorf("ADD --checksum=%s: for a git repository it is a commit SHA (7 to 64 hex digits)", checksum)
	}
	dir, err := os.MkdirTemp(o.WorkDir, "epoch-git-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(dir)
	remote := ref.Remote
	if ref.Ref != "" {
		remote += "#" + ref.Ref
	}
	// The ref resolves as ADD's does (BuildKit's git source), so the build
	// is dated by the commit ADD checks out; only the commit's time is read,
	// so submodules are not fetched.
	f, err := source.FetchWithInfo(ctx, remote, "", dir+"/checkout", source.FetchOptions{Git: "recurse-submodules=false", Auth: &o.GitAuth, BuildKitRefs: true})
	if err != nil {
		return nil, "", fmt.Errorf("fetching %s: %w", shown, err)
	}
	if checksum != "" && !strings.HasPrefix(f.Commit, checksum) {
		return nil, "", fmt.Errorf("fetching %s: commit %s does not match --checksum=%s", shown, f.Commit, checksum)
	}
	return &f.CommitTime, fmt.Sprintf("the time of commit %s of %s", f.Commit, shown), nil
}
