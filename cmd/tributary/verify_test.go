package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"
)

// TestVerifyAcceptsEveryConsumerSetting keeps `tributary verify --config`
// able to read a consumer's config file: every setting the consumer declares
// is declared by verify too (used, or accepted and ignored).
func TestVerifyAcceptsEveryConsumerSetting(t *testing.T) {
	settings := func(run func(context.Context, []string, env) error) map[string]bool {
		var out bytes.Buffer
		e := env{stdout: &out, stderr: &out, lookup: func(string) (string, bool) { return "", false }}
		_ = run(context.Background(), []string{"--help"}, e)
		got := map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`).FindAllStringSubmatch(out.String(), -1) {
			got[m[1]] = true
		}
		if len(got) < 5 {
			t.Fatalf("could not read the settings from --help:\n%s", out.String())
		}
		return got
	}
	consumer, verify := settings(runConsumer), settings(runVerify)
	for name := range consumer {
		if !verify[name] {
			t.Errorf("tributary consumer has --%s, which tributary verify does not accept: "+
				"verify --config cannot read a consumer's config file that sets it (declare it in ignoreConsumerSettings)", name)
		}
	}
}
