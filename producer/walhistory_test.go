package producer

import (
	"math"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/tributary-cdc/tributary/txlog"
)

func TestParseTimelineHistory(t *testing.T) {
	// As PostgreSQL writes 00000003.history: a line per ancestor.
	content := "1\t0/3000158\tno recovery target specified\n\n# a comment\n2\t0/5000028\tat restore point \"x\"\n"
	chain, err := parseTimelineHistory([]byte(content), 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []timelineSpan{{1, 0, 0x3000158}, {2, 0x3000158, 0x5000028}, {3, 0x5000028, math.MaxUint64}}
	if len(chain) != len(want) {
		t.Fatalf("chain %+v, want %+v", chain, want)
	}
	for i := range want {
		if chain[i] != want[i] {
			t.Fatalf("chain[%d] = %+v, want %+v", i, chain[i], want[i])
		}
	}
	for _, bad := range []string{"1\n", "x\t0/1\n", "1\tnot-an-lsn\n"} {
		if _, err := parseTimelineHistory([]byte(bad), 2); err == nil {
			t.Errorf("history %q parsed without an error", bad)
		}
	}
}

func TestOffHistory(t *testing.T) {
	const sys = "7301"
	// The source: timeline 3, which began at 0/5000000, after 1 ended at
	// 0/3000000 and 2 at 0/5000000; its WAL ends at 0/9000000.
	h := sourceHistory{systemID: sys, chain: []timelineSpan{{1, 0, 0x3000000}, {2, 0x3000000, 0x5000000}, {3, 0x5000000, math.MaxUint64}}}
	const walEnd = pglogrepl.LSN(0x9000000)
	at := func(end pglogrepl.LSN, src txlog.WALHistory) txlog.Position {
		return txlog.Position{CommitLSN: end - 8, EndLSN: end, Xid: 9, Source: src}
	}
	on := func(tli int32, start pglogrepl.LSN) txlog.WALHistory {
		return txlog.WALHistory{SystemID: sys, Timeline: tli, TimelineStart: start}
	}
	other := txlog.WALHistory{SystemID: "8800", Timeline: 7, TimelineStart: 0x1000000}
	for _, tc := range []struct {
		name       string
		pos        txlog.Position
		h          *sourceHistory // h when nil
		standby    bool
		slotExists bool
		confirmed  pglogrepl.LSN
		adopt      bool
		want       string // in the reason; "" for none
		adopted    bool
	}{
		{name: "nothing in Kafka", pos: txlog.Position{}},
		{name: "on the current timeline", pos: at(0x8000000, on(3, 0x5000000))},
		{name: "on an ancestor, before it ended", pos: at(0x4000000, on(2, 0x3000000))},
		{name: "on an ancestor, where it ended", pos: at(0x3000000, on(1, 0))},
		{name: "on an ancestor, past where it ended", pos: at(0x3000100, on(1, 0)), want: "left timeline 1 at 0/3000000"},
		{name: "a sibling with the same number", pos: at(0x5000100, on(2, 0x4000000)), want: "timeline 2 began at 0/3000000"},
		{name: "a timeline not in the history", pos: at(0x2000000, on(4, 0x1000000)), want: "does not descend from timeline 4"},
		{name: "another cluster", pos: at(0x2000000, other), want: "--adopt-source"},
		{name: "another cluster with the slot", pos: at(0x2000000, other), slotExists: true, confirmed: 0x2000000, want: "another PostgreSQL cluster"},
		{name: "adopted, no slot", pos: at(0x2000000, other), adopt: true, adopted: true},
		{name: "adopted, the slot past the position", pos: at(0x2000000, other), adopt: true, slotExists: true, confirmed: 0x2000000, adopted: true},
		{name: "adopted, the slot below the position", pos: at(0x2000000, other), adopt: true, slotExists: true, confirmed: 0x1000000,
			adopted: true, want: "confirmed to 0/1000000"},
		{name: "adopted, WAL behind", pos: at(0xA000000, other), adopt: true, adopted: true, want: "WAL ends at 0/9000000"},
		{name: "no source recorded", pos: at(0x8000000, txlog.WALHistory{})},
		{name: "no source recorded, WAL behind", pos: at(0xA000000, txlog.WALHistory{}), want: "WAL ends at 0/9000000"},
		{name: "on the current timeline, WAL behind", pos: at(0xA000000, on(3, 0x5000000)), want: "WAL ends at 0/9000000"},
		{name: "recorded from a standby (no timeline)", pos: at(0x8000000, txlog.WALHistory{SystemID: sys})},
		{name: "the source's history unknown", pos: at(0x3000100, on(1, 0)), h: &sourceHistory{systemID: sys}},
		{name: "a standby: timelines and WAL end not compared", pos: at(0xA000000, on(1, 0)), h: &sourceHistory{systemID: sys}, standby: true},
		{name: "a standby of another cluster", pos: at(0x2000000, other), h: &sourceHistory{systemID: sys}, standby: true, want: "another PostgreSQL cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := h
			if tc.h != nil {
				src = *tc.h
			}
			why, adopted := offHistory(tc.pos, src, walEnd, tc.standby, tc.slotExists, tc.confirmed, tc.adopt)
			if tc.want == "" && why != "" || tc.want != "" && !strings.Contains(why, tc.want) {
				t.Errorf("reason %q, want one with %q", why, tc.want)
			}
			if adopted != tc.adopted {
				t.Errorf("adopted %v, want %v", adopted, tc.adopted)
			}
		})
	}
}

func TestSourceHistoryAt(t *testing.T) {
	h := sourceHistory{systemID: "7301", chain: []timelineSpan{{1, 0, 0x3000000}, {3, 0x3000000, math.MaxUint64}}}
	for _, tc := range []struct {
		end   pglogrepl.LSN
		tli   int32
		start pglogrepl.LSN
	}{{0x1000000, 1, 0}, {0x3000000, 1, 0}, {0x3000001, 3, 0x3000000}, {0x9000000, 3, 0x3000000}} {
		if got := h.at(tc.end); got != (txlog.WALHistory{SystemID: "7301", Timeline: tc.tli, TimelineStart: tc.start}) {
			t.Errorf("at(%s) = %+v, want timeline %d from %s", tc.end, got, tc.tli, tc.start)
		}
	}
	if got := (sourceHistory{systemID: "7301"}).at(0x1000000); got != (txlog.WALHistory{SystemID: "7301"}) {
		t.Errorf("a standby's history at = %+v, want the system identifier alone", got)
	}
}
