package publish

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// kanikoConfigFile is where kaniko reads credentials when DOCKER_CONFIG
// does not name an existing file or directory.
const kanikoConfigFile = "/kaniko/.docker/config.json"

// DefaultKeychain reads credentials from the Docker config file that kaniko
// reads: $DOCKER_CONFIG/config.json when DOCKER_CONFIG names a directory,
// $DOCKER_CONFIG itself when it names a file, and
// /kaniko/.docker/config.json otherwise. When that file does not exist it
// falls back to authn.DefaultKeychain ($HOME/.docker/config.json, then
// Podman's auth.json). Credential helpers named in the file are run.
var DefaultKeychain authn.Keychain = dockerConfigKeychain{}

type dockerConfigKeychain struct{}

// configPath returns the config file kaniko would read.
func configPath() string {
	dc := os.Getenv("DOCKER_CONFIG")
	if dc == "" {
		return kanikoConfigFile
	}
	fi, err := os.Stat(dc)
	switch {
	case err == nil && fi.IsDir():
		return filepath.Join(dc, config.ConfigFileName)
	case err == nil:
		return filepath.Clean(dc)
	case errors.Is(err, fs.ErrNotExist):
		return kanikoConfigFile
	default:
		return filepath.Clean(dc)
	}
}

// Resolve implements authn.Keychain.
func (dockerConfigKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	path := configPath()
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return authn.DefaultKeychain.Resolve(target)
	}
	if err != nil {
		return nil, fmt.Errorf("opening docker config: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("reading docker config %s: %w", path, err)
	}
	return resolve(cf, target)
}

// LoadKeychain reads a Docker config file once, and returns a keychain that
// answers from memory, with the file's path. path "" is the file that
// DefaultKeychain reads; when that does not exist, the keychain is
// DefaultKeychain's fallback and the path "". The executor loads its
// credentials this way before the first RUN step (see
// executor/credentials.go).
func LoadKeychain(path string) (authn.Keychain, string, error) {
	fallback := path == ""
	if fallback {
		path = configPath()
	}
	b, err := os.ReadFile(path)
	if fallback && errors.Is(err, fs.ErrNotExist) {
		return authn.DefaultKeychain, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading docker config: %w", errors.Unwrap(err))
	}
	cf, err := config.LoadFromReader(bytes.NewReader(b))
	if err != nil {
		return nil, "", fmt.Errorf("reading docker config %s: %w", path, err)
	}
	return memoryKeychain{cf}, path, nil
}

type memoryKeychain struct{ cf *configfile.ConfigFile }

func (k memoryKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return resolve(k.cf, target)
}

// resolve finds target's credentials in cf.
func resolve(cf *configfile.ConfigFile, target authn.Resource) (authn.Authenticator, error) {
	// A repository may have its own entry; then its registry; Docker Hub
	// is keyed by its legacy URL.
	var empty types.AuthConfig
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		cfg, err := cf.GetAuthConfig(key)
		if err != nil {
			return nil, fmt.Errorf("getting credentials for %s: %w", key, err)
		}
		cfg.ServerAddress = ""
		if cfg == empty {
			continue
		}
		return authn.FromConfig(authn.AuthConfig{
			Username:      cfg.Username,
			Password:      cfg.Password,
			Auth:          cfg.Auth,
			IdentityToken: cfg.IdentityToken,
			RegistryToken: cfg.RegistryToken,
		}), nil
	}
	return authn.Anonymous, nil
}
