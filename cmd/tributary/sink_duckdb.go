//go:build cgo

package main

import (
	"time"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/duckdb"
)

// duckDBMemoryLimit is --duckdb-memory-limit's default.
const duckDBMemoryLimit = duckdb.DefaultMemoryLimit

// newDuckDBSink opens the DuckDB warehouse sink, which needs cgo; it also
// returns the group size and linger that make its micro-batches.
func newDuckDBSink(o duckdbOptions) (consumer.Sink, int, time.Duration, error) {
	d, err := duckdb.New(duckdb.Config{Path: o.path, Consumer: o.consumer, FlushRows: o.flushRows,
		FlushInterval: o.flushInterval, ExportParquet: o.exportParquet, ExportInterval: o.exportInterval,
		MemoryLimit: o.memoryLimit, Threads: o.threads, Logger: o.log})
	if err != nil {
		return nil, 0, 0, err
	}
	return d, d.GroupMaxEvents(), d.GroupLinger(), nil
}
