package check

// LooksSecret tells whether a build argument's or variable's name looks
// like a secret's, by BuildKit's rule of SecretsUsedInArgOrEnv
// (dockerfile2llb's getSecretsRegex: a token such as key, password,
// secret or token as the whole name or a word of it between underscores,
// unless a word such as public, file or version says otherwise). The
// provenance leaves the values of such build arguments out.
func LooksSecret(name string) bool { return looksSecret(name) }
