package attest

import (
	"encoding/json"
	"errors"
	"fmt"

	intoto "github.com/in-toto/in-toto-golang/in_toto"
)

// SBOM returns the in-toto Statement (v1) whose predicate is the SBOM doc
// (a JSON document: SPDX, predicateType PredicateSPDX, or CycloneDX,
// PredicateCycloneDX) about s, as BuildKit's makeInTotoStatement makes the
// statement of its SBOM generator's document.
func SBOM(doc []byte, predicateType string, s Subject) ([]byte, error) {
	if predicateType != PredicateSPDX && predicateType != PredicateCycloneDX {
		return nil, fmt.Errorf("SBOM predicate type %q: want %s or %s", predicateType, PredicateSPDX, PredicateCycloneDX)
	}
	if !json.Valid(doc) {
		return nil, errors.New("the SBOM is not a JSON document")
	}
	subjects, err := subjects(s)
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(intoto.Statement{
		StatementHeader: intoto.StatementHeader{Type: intoto.StatementInTotoV1, PredicateType: predicateType, Subject: subjects},
		Predicate:       json.RawMessage(doc),
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the SBOM statement: %w", err)
	}
	return out, nil
}
