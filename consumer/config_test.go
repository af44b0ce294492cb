package consumer

import (
	"strings"
	"testing"
)

// TestConfigPerKeyHasNoDeadLetters: per-key workers apply changes, not
// whole source transactions, so they cannot set one aside; the combination
// is refused rather than ignored.
func TestConfigPerKeyHasNoDeadLetters(t *testing.T) {
	for _, tc := range []struct {
		mode    Mode
		onError OnError
		refused bool
	}{
		{ModePerKey, OnErrorDeadLetter, true},
		{ModePerKey, OnErrorStop, false},
		{ModeTransactional, OnErrorDeadLetter, false},
	} {
		c := Config{Mode: tc.mode, OnError: tc.onError}
		err := c.validate()
		if got := err != nil && strings.Contains(err.Error(), "per-key mode has no dead letters"); got != tc.refused {
			t.Errorf("mode %s, on-error %s: %v; want refused %v", tc.mode, tc.onError, err, tc.refused)
		}
	}
}
