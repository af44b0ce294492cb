package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

func TestSlotUsage(t *testing.T) {
	var out, errb bytes.Buffer
	e := env{stdout: &out, stderr: &errb, lookup: func(string) (string, bool) { return "", false }}
	if err := slotMain(context.Background(), nil, e, terminal{}); err != exitCode(2) {
		t.Fatalf("no subcommand: %v", err)
	}
	if err := slotMain(context.Background(), []string{"explode"}, e, terminal{}); !errors.As(err, new(usageError)) {
		t.Fatalf("unknown subcommand: %v", err)
	}
	if err := slotMain(context.Background(), []string{"drop", "--source", "postgres://h/db"}, e, terminal{}); !errors.As(err, new(usageError)) ||
		!strings.Contains(err.Error(), "slot") {
		t.Fatalf("drop without --slot: %v", err)
	}
}

func TestActiveSlotError(t *testing.T) {
	err := errActiveSlot(slotStatus{Name: "s", Active: true, ActivePID: ptr(int32(77)), Client: "tributary 10.0.0.1"})
	if !strings.Contains(err.Error(), "pid 77") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("%v", err)
	}
}
