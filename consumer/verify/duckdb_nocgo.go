//go:build !cgo

package verify

import (
	"context"
	"errors"
)

// NewDuckDBTarget reports that a static (CGO_ENABLED=0) build has no DuckDB.
func NewDuckDBTarget(context.Context, string, string, string) (Target, error) {
	return nil, &InputError{errors.New("--sink duckdb: this tributary binary was built without cgo, which DuckDB needs; use a cgo build")}
}
