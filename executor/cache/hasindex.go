package cache

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// HasIndex reports whether the repository has an index of the layer whose
// digest is layer (one request, the index not read): an extraction need
// not index that layer again, StoreIndex would keep the one there. False
// when it could not tell.
func (c *Cache) HasIndex(ctx context.Context, layer v1.Hash) bool {
	opts := append(c.o.Remote(true), remote.WithContext(ctx))
	_, err := remote.Head(c.o.Repo.Tag(indexTag(layer)), opts...)
	return err == nil
}
