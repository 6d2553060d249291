package baseimage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/credentials"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
)

// Keychain reads the registry credentials of a Secret's data: the Docker
// config file of a kubernetes.io/dockerconfigjson Secret (.dockerconfigjson)
// or the older auths map of a kubernetes.io/dockercfg Secret (.dockercfg).
//
// A registry's credentials are found as the executor finds them
// (executor/publish's keychain, which is Docker's file store): the entry
// for the repository ("registry.example.com/team/app"), else the entry for
// its registry, keyed by host[:port] or by a URL of it
// ("https://registry.example.com/v1/"); Docker Hub's key is
// "https://index.docker.io/v1/". Nothing else gets them: another port of
// the same host is another registry. Unlike the executor, the keychain
// never runs the credential helpers or stores the file may name
// (credsStore, credHelpers): the manager runs no program a Secret names.
// Errors name the key, never a value.
func Keychain(data map[string][]byte) (authn.Keychain, error) {
	cf := configfile.New("")
	switch {
	case data[corev1.DockerConfigJsonKey] != nil:
		if err := cf.LoadFromReader(bytes.NewReader(data[corev1.DockerConfigJsonKey])); err != nil {
			return nil, fmt.Errorf("reading %s: %w", corev1.DockerConfigJsonKey, errors.New(redactJSONError(err)))
		}
	case data[corev1.DockerConfigKey] != nil:
		// The legacy file is the auths map alone.
		b := append(append([]byte(`{"auths":`), data[corev1.DockerConfigKey]...), '}')
		if err := cf.LoadFromReader(bytes.NewReader(b)); err != nil {
			return nil, fmt.Errorf("reading %s: %w", corev1.DockerConfigKey, errors.New(redactJSONError(err)))
		}
	default:
		return nil, fmt.Errorf("no %s or %s key: the Secret must be of type %s or %s",
			corev1.DockerConfigJsonKey, corev1.DockerConfigKey, corev1.SecretTypeDockerConfigJson, corev1.SecretTypeDockercfg)
	}
	return keychain{auths: cf.GetAuthConfigs()}, nil
}

// redactJSONError is a parse error's text without what it may quote of
// the input: encoding/json quotes no value, but a base64 error names the
// offending byte's offset only; either way, say what kind of error it is.
func redactJSONError(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "illegal base64") {
		return "an auth value is not base64"
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || strings.HasPrefix(msg, "invalid character") || strings.HasPrefix(msg, "unexpected end") || strings.HasPrefix(msg, "json:") {
		return "not valid JSON: " + msg
	}
	return "not a Docker config file"
}

type keychain struct {
	auths map[string]types.AuthConfig
}

// Resolve implements authn.Keychain.
func (k keychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		cfg, ok := k.lookup(key)
		if !ok {
			continue
		}
		return authn.FromConfig(authn.AuthConfig{
			Username:      cfg.Username,
			Password:      cfg.Password,
			IdentityToken: cfg.IdentityToken,
			RegistryToken: cfg.RegistryToken,
		}), nil
	}
	return authn.Anonymous, nil
}

// lookup is the entry of key as Docker's file store finds it
// (credentials' fileStore.Get): the exact key, else a key whose host
// (credentials.ConvertToHostname: without scheme and path) is key. Keys are
// tried in sorted order, so that the answer does not depend on map order.
func (k keychain) lookup(key string) (types.AuthConfig, bool) {
	var empty types.AuthConfig
	if cfg, ok := k.auths[key]; ok {
		cfg.ServerAddress = ""
		return cfg, cfg != empty
	}
	keys := make([]string, 0, len(k.auths))
	for reg := range k.auths {
		keys = append(keys, reg)
	}
	slices.Sort(keys)
	for _, reg := range keys {
		if credentials.ConvertToHostname(reg) == key {
			cfg := k.auths[reg]
			cfg.ServerAddress = ""
			return cfg, cfg != empty
		}
	}
	return empty, false
}
