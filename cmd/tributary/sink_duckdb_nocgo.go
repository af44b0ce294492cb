//go:build !cgo

package main

import (
	"errors"
	"time"

	"github.com/tributary-cdc/tributary/consumer"
)

// duckDBMemoryLimit is --duckdb-memory-limit's default: none, since this
// build has no DuckDB.
const duckDBMemoryLimit = ""

// newDuckDBSink reports that a static (CGO_ENABLED=0) build has no DuckDB.
func newDuckDBSink(duckdbOptions) (consumer.Sink, int, time.Duration, error) {
	return nil, 0, 0, errors.New("--sink duckdb: this tributary binary was built without cgo, which DuckDB needs; use a cgo build")
}
