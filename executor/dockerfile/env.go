package dockerfile

import "strings"

// Env is an ordered set of environment variables, as a stage's state holds
// them: the image's ENV plus the ARGs in scope. It implements buildkit's
// shell.EnvGetter, so it drives word expansion.
type Env struct {
	keys []string
	vals map[string]string
}

// EnvFromSlice builds an Env from KEY=VALUE entries; later entries win.
func EnvFromSlice(kvs []string) *Env {
	e := &Env{}
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		e.Set(k, v)
	}
	return e
}

// Set adds or replaces k, keeping the position of an existing key.
func (e *Env) Set(k, v string) {
	if e.vals == nil {
		e.vals = map[string]string{}
	}
	if _, ok := e.vals[k]; !ok {
		e.keys = append(e.keys, k)
	}
	e.vals[k] = v
}

// Get implements shell.EnvGetter.
func (e *Env) Get(k string) (string, bool) {
	if e == nil {
		return "", false
	}
	v, ok := e.vals[k]
	return v, ok
}

// MustGet returns k's value, or "" when it is not set.
func (e *Env) MustGet(k string) string {
	v, _ := e.Get(k)
	return v
}

// Keys implements shell.EnvGetter.
func (e *Env) Keys() []string {
	if e == nil {
		return nil
	}
	return append([]string(nil), e.keys...)
}

// Slice returns the variables as KEY=VALUE in order.
func (e *Env) Slice() []string {
	if e == nil {
		return nil
	}
	out := make([]string, 0, len(e.keys))
	for _, k := range e.keys {
		out = append(out, k+"="+e.vals[k])
	}
	return out
}

// Clone returns an independent copy.
func (e *Env) Clone() *Env {
	c := &Env{}
	if e == nil {
		return c
	}
	for _, k := range e.keys {
		c.Set(k, e.vals[k])
	}
	return c
}
