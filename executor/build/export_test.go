package build

// SetCacheMoves sets whether cache mounts are moved in and out of a stage's
// root where they can be (true, the default) or always copied, and
// returns what restores the setting.
func SetCacheMoves(v bool) (restore func()) {
	old := cacheMoves
	cacheMoves = v
	return func() { cacheMoves = old }
}
