package producer

import (
	"strings"
	"testing"

	"github.com/tributary-cdc/tributary/schemas"
)

// TestEnvelopeConfig checks the envelope settings: the default, the
// placeholder's default, and the Debezium-only settings refused without it.
func TestEnvelopeConfig(t *testing.T) {
	base := func() Config {
		return Config{SourceDSN: "postgres://u@h/db", Publication: "p", Slot: "s", Prefix: "x", Registry: &schemas.Registry{}}
	}
	c := base()
	if err := c.validate(); err != nil || c.Envelope != schemas.EnvelopeTributary || c.ToastPlaceholder != "" {
		t.Fatalf("default: %v, envelope %q, placeholder %q", err, c.Envelope, c.ToastPlaceholder)
	}
	c = base()
	c.Envelope = schemas.EnvelopeDebezium
	if err := c.validate(); err != nil || c.ToastPlaceholder != "__debezium_unavailable_value" {
		t.Fatalf("debezium: %v, placeholder %q", err, c.ToastPlaceholder)
	}
	for _, mod := range []func(*Config){
		func(c *Config) { c.Tombstones = true },
		func(c *Config) { c.ToastPlaceholder = "x" },
		func(c *Config) { c.EnvelopeSkipTruncate = true },
		func(c *Config) { c.Envelope = "avro" },
	} {
		c := base()
		mod(&c)
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), "envelope") && !strings.Contains(err.Error(), "Envelope") {
			t.Errorf("%+v: error %v", c, err)
		}
	}
}
