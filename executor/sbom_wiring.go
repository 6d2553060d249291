package main

import (
	"context"
	"errors"

	"github.com/slipway-dev/slipway/executor/attest"
)

// sbomStatement is the in-toto statement of the SBOM of ai's file system.
func sbomStatement(ctx context.Context, o *options, ai attestedImage, sub attest.Subject) (attest.Statement, error) {
	return attest.Statement{}, errors.New("--sbom: not available in this executor yet")
}
