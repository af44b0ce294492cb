package verify

import (
	"fmt"
	"io"
)

// WriteText writes the report for people: one line per table, then the
// differing keys.
func (r *Report) WriteText(w io.Writer) error {
	status := "EQUAL"
	if !r.Equal {
		status = "DIFFERENT"
	}
	var err error
	pf := func(format string, a ...any) {
		if err == nil {
			_, err = fmt.Fprintf(w, format, a...)
		}
	}
	pf("verify: %s\n  source %s at LSN %s\n  target %s", status, r.Source, r.SourceLSN, r.Target)
	if r.TargetLSN != "" {
		pf(" applied up to LSN %s", r.TargetLSN)
	}
	pf("\n  %d table(s), %d round(s), %s\n", len(r.Tables), r.Rounds, r.Elapsed)
	for _, t := range r.Tables {
		switch {
		case t.Problem != "":
			pf("  %-40s DIFFERENT  %s\n", t.Table, t.Problem)
		case t.Missing+t.Extra+t.Different == 0: // the rows are equal; invariants are reported below
			pf("  %-40s equal      %d rows, %d range(s) compared\n", t.Table, t.SourceRows, t.RangesCompared)
		default:
			pf("  %-40s DIFFERENT  source %d rows, target %d rows, %d range(s) compared: %d missing, %d extra, %d different\n",
				t.Table, t.SourceRows, t.TargetRows, t.RangesCompared, t.Missing, t.Extra, t.Different)
			for _, k := range t.Keys {
				pf("      %-9s %s\n", k.Kind, k.Key)
			}
			if t.KeysTruncated {
				pf("      ... more keys differ than are listed\n")
			}
		}
		if t.InvariantViolations > 0 {
			pf("  %-40s BROKEN     %d row(s) break the sink's invariants\n", t.Table, t.InvariantViolations)
			for _, v := range t.Invariants {
				pf("      invariant %s\n", v)
			}
		}
	}
	return err
}
