//go:build !unix

package duckdb

// ignoreFileSizeSignal: there is no SIGXFSZ here.
func ignoreFileSizeSignal() {}
