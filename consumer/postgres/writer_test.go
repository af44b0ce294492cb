package postgres

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// copyEscapeByReplace is COPY text format's escaping written the plain way:
// what copyEscape must produce.
func copyEscapeByReplace(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s)
}

func TestCopyEscape(t *testing.T) {
	in := []string{"", "plain", `\`, "\n", "a\tb", "\r\n", `x\y\`, "tab at end\t", "\tstart", "é\\ü\n"}
	alphabet := []byte("ab\\\n\r\t\x00é")
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		in = append(in, string(b))
	}
	var buf bytes.Buffer
	for _, s := range in {
		buf.Reset()
		buf.WriteString("prefix|")
		copyEscape(&buf, s)
		if got, want := buf.String(), "prefix|"+copyEscapeByReplace(s); got != want {
			t.Fatalf("copyEscape(%q) wrote %q, want %q", s, got, want)
		}
	}
}

func BenchmarkCopyEscape(b *testing.B) {
	for _, s := range []string{strings.Repeat("a plain 200-byte text value ", 7), strings.Repeat("with\ttabs\nand lines\\ ", 9)} {
		b.Run(strings.Fields(s)[0], func(b *testing.B) {
			var buf bytes.Buffer
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				buf.Reset()
				copyEscape(&buf, s)
			}
		})
	}
}
