package webhook

import "testing"

func TestRepositoryID(t *testing.T) {
	tests := []struct {
		url  string
		want string
	}{
		{"https://github.com/slipway-dev/demo", "github.com/slipway-dev/demo"},
		{"https://github.com/slipway-dev/demo.git", "github.com/slipway-dev/demo"},
		{"https://github.com/slipway-dev/demo/", "github.com/slipway-dev/demo"},
		{"https://github.com/slipway-dev/demo.git/", "github.com/slipway-dev/demo"},
		{"  https://github.com/slipway-dev/demo  ", "github.com/slipway-dev/demo"},
		{"HTTPS://GitHub.COM/Slipway-Dev/Demo.git", "github.com/slipway-dev/demo"},
		{"https://github.com./slipway-dev/demo", "github.com/slipway-dev/demo"},
		{"https://github.com//slipway-dev//demo", "github.com/slipway-dev/demo"},
		{"http://github.com/slipway-dev/demo", "github.com/slipway-dev/demo"},
		{"https://github.com:443/slipway-dev/demo", "github.com/slipway-dev/demo"},
		{"https://x-access-token:ghs_secret@github.com/slipway-dev/demo.git", "github.com/slipway-dev/demo"},
		{"https://oauth2@github.com/slipway-dev/demo", "github.com/slipway-dev/demo"},
		{"git://github.com/slipway-dev/demo.git", "github.com/slipway-dev/demo"},
		{"ssh://git@github.com/slipway-dev/demo.git", "github.com/slipway-dev/demo"},
		{"ssh://git@github.com:22/slipway-dev/demo.git", "github.com/slipway-dev/demo"},
		{"git+ssh://git@github.com/slipway-dev/demo.git", "github.com/slipway-dev/demo"},
		{"git@github.com:slipway-dev/demo.git", "github.com/slipway-dev/demo"},
		{"git@github.com:/slipway-dev/demo.git", "github.com/slipway-dev/demo"},
		{"github.com:slipway-dev/demo", "github.com/slipway-dev/demo"},
		{"ssh://git@git.example.com:2222/platform/demo.git", "git.example.com/platform/demo"},
		{"https://git.example.com:3000/platform/demo", "git.example.com/platform/demo"},
		{"https://gitlab.example.com/group/subgroup/demo.git", "gitlab.example.com/group/subgroup/demo"},
		{"git@gitlab.example.com:group/subgroup/demo.git", "gitlab.example.com/group/subgroup/demo"},
		{"https://bitbucket.org/slipway-dev/demo", "bitbucket.org/slipway-dev/demo"},
		{"https://emma@bitbucket.org/slipway-dev/demo.git", "bitbucket.org/slipway-dev/demo"},
		{"https://[::1]:8443/platform/demo.git", "::1/platform/demo"},
		{"https://github.com/slipway-dev/demo.github.io", "github.com/slipway-dev/demo.github.io"},
		// Not the URL of a repository on a server.
		{"", ""},
		{"https://github.com", ""},
		{"https://github.com/", ""},
		{"file:///srv/git/demo.git", ""},
		{"/srv/git/demo.git", ""},
		{"./demo", ""},
		{"ftp://github.com/slipway-dev/demo", ""},
		{"https://git hub.com/x", ""},
		{":slipway-dev/demo", ""},
		{"dir/sub:x", ""},
	}
	for _, tc := range tests {
		if got := repositoryID(tc.url); got != tc.want {
			t.Errorf("repositoryID(%q) = %q, want %q", tc.url, got, tc.want)
		}
	}
}

func TestSameRepository(t *testing.T) {
	tests := []struct {
		source string
		urls   []string
		want   bool
	}{
		{"https://github.com/slipway-dev/demo", []string{"git@github.com:slipway-dev/demo.git"}, true},
		{"git@github.com:slipway-dev/demo.git", []string{"https://github.com/slipway-dev/demo.git"}, true},
		{"ssh://git@github.com/slipway-dev/demo", []string{"https://GitHub.com/Slipway-Dev/Demo"}, true},
		{"https://github.com/slipway-dev/demo", []string{"https://github.com/slipway-dev/other.git", "git@github.com:slipway-dev/demo.git"}, true},
		{"https://github.com/slipway-dev/demo", []string{"https://github.com/slipway-dev/demo-fork"}, false},
		{"https://github.com/slipway-dev/demo", []string{"https://gitlab.com/slipway-dev/demo"}, false},
		{"https://github.com/slipway-dev/demo", []string{"https://github.com/other/slipway-dev/demo"}, false},
		{"https://github.com/slipway-dev/demo", []string{"https://evil.example/github.com/slipway-dev/demo"}, false},
		{"https://github.com/slipway-dev/demo", []string{"https://github.com.evil.example/slipway-dev/demo"}, false},
		{"https://github.com/slipway-dev/demo", nil, false},
		{"https://github.com/slipway-dev/demo", []string{""}, false},
		{"", []string{""}, false},
		{"/srv/git/demo", []string{"/srv/git/demo"}, false},
	}
	for _, tc := range tests {
		if got := sameRepository(tc.source, tc.urls); got != tc.want {
			t.Errorf("sameRepository(%q, %q) = %v, want %v", tc.source, tc.urls, got, tc.want)
		}
	}
}

func TestMatch(t *testing.T) {
	const repo = "https://github.com/slipway-dev/demo"
	branch := func(name string) push { return push{ref: "refs/heads/" + name} }
	gh := func(defaultBranch string, pushes ...push) *payload {
		return &payload{pushes: pushes, repos: []string{repo + ".git"}, defaultBranch: defaultBranch}
	}
	tests := []struct {
		name     string
		revision string
		payload  *payload
		wantRef  string
		ignored  string
	}{
		{"branch name", "main", gh("main", branch("main")), "refs/heads/main", ""},
		{"full branch ref", "refs/heads/main", gh("main", branch("main")), "refs/heads/main", ""},
		{"branch with a slash", "release/1.x", gh("main", branch("release/1.x")), "refs/heads/release/1.x", ""},
		{"another branch", "main", gh("main", branch("dev")), "", "branch dev is not the revision main"},
		{"branch names differ in case", "main", gh("main", branch("Main")), "", "branch Main is not the revision main"},
		{"prefix of the branch", "main", gh("main", branch("main-2")), "", "branch main-2 is not the revision main"},
		{"tag push, tag revision", "refs/tags/v1", gh("main", push{ref: "refs/tags/v1"}), "refs/tags/v1", ""},
		{"tag push, branch revision of its name", "v1", gh("main", push{ref: "refs/tags/v1"}), "", "tag v1 is not the revision v1"},
		{"branch push, tag revision of its name", "refs/tags/v1", gh("main", branch("v1")), "", "branch v1 is not the revision refs/tags/v1"},
		{"other ref revision", "refs/pull/42/head", gh("main", branch("main")), "", "branch main is not the revision refs/pull/42/head"},
		{"other ref pushed", "main", gh("main", push{ref: "refs/notes/commits"}), "", "ref refs/notes/commits is not the revision main"},
		{"default branch", "", gh("main", branch("main")), "refs/heads/main", ""},
		{"not the default branch", "", gh("main", branch("dev")), "", "branch dev is not the default branch main"},
		{"default branch unknown", "", gh("", branch("dev")), "refs/heads/dev", ""},
		{"tag, default branch revision", "", gh("", push{ref: "refs/tags/v1"}), "", "tag v1 is not a branch, and the revision is the default branch"},
		{"SHA-1 revision", pinnedSHA, gh("main", branch("main")), "", "the revision is a commit, which no push moves"},
		{"SHA-256 revision", "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c0d1a26e67d8f5eaf1f6ba5c5", gh("main", branch("main")), "", "the revision is a commit, which no push moves"},
		{"short SHA revision is a branch name", "0d1a26e", gh("main", branch("0d1a26e")), "refs/heads/0d1a26e", ""},
		{"deleted branch", "main", gh("main", push{ref: "refs/heads/main", deleted: true}), "", "branch main was deleted"},
		{"several refs, one matches", "main", gh("main", branch("dev"), push{ref: "refs/tags/v2"}, branch("main")), "refs/heads/main", ""},
		{"several refs, none matches", "main", gh("main", branch("dev"), branch("feature")), "", "branch dev is not the revision main"},
		{"no refs", "main", gh("main"), "", "the push changed no branch or tag"},
		{"other repository", "main", &payload{pushes: []push{branch("main")}, repos: []string{"https://github.com/slipway-dev/other"}}, "", "repository github.com/slipway-dev/other is not the ImageBuild's source"},
		{"repository not a URL", "main", &payload{pushes: []push{branch("main")}, repos: []string{"/srv/demo"}}, "", "repository (not a git URL) is not the ImageBuild's source"},
		{"no repository", "main", &payload{pushes: []push{branch("main")}}, "", "the payload names no repository"},
		{"generic, check now", "main", &payload{pushes: []push{{anyRef: true}}, anyRepo: true}, "", ""},
		{"generic, check now, commit revision", pinnedSHA, &payload{pushes: []push{{anyRef: true}}, anyRepo: true}, "", "the revision is a commit, which no push moves"},
		{"push without a ref", "main", gh("main", push{}), "", "the payload names no ref"},
		{"generic, short ref", "refs/heads/main", &payload{pushes: []push{{ref: "main"}}, anyRepo: true}, "main", ""},
		{"branch name with control characters is clipped", "main", gh("main", branch("dev\n\x1b[31m")), "", "branch dev??[31m is not the revision main"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ref, ignored := match(&Target{URL: repo, Revision: tc.revision, Secret: []byte("s")}, tc.payload)
			if ref != tc.wantRef || ignored != tc.ignored {
				t.Errorf("match = %q, %q; want %q, %q", ref, ignored, tc.wantRef, tc.ignored)
			}
		})
	}
}

func TestClip(t *testing.T) {
	long := ""
	for i := 0; i < 100; i++ {
		long += "äbc"
	}
	tests := []struct{ in, want string }{
		{"main", "main"},
		{"a\nb\tc\x7fd\u0085e", "a?b?c?d?e"},
		{"bad \xff utf8", "bad ? utf8"},
		{long, long[:256] + "…"},
	}
	for _, tc := range tests {
		if got := clip(tc.in); got != tc.want {
			t.Errorf("clip(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
