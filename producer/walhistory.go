package producer

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/tributary-cdc/tributary/internal/retry"
	"github.com/tributary-cdc/tributary/txlog"
)

// timelineSpan is one timeline of a WAL history: the WAL from start to end
// is on it. The current timeline has no end yet (math.MaxUint64).
type timelineSpan struct {
	tli        int32
	start, end pglogrepl.LSN
}

// parseTimelineHistory reads a timeline history file, as TIMELINE_HISTORY
// returns it for timeline current: a line per ancestor, oldest first, with
// the ancestor's timeline and the LSN at which the next one began ("1
// <tab> 0/3000158 <tab> reason"). It returns the chain of timelines,
// current last.
func parseTimelineHistory(content []byte, current int32) ([]timelineSpan, error) {
	var chain []timelineSpan
	var start pglogrepl.LSN
	sc := bufio.NewScanner(bytes.NewReader(content))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("timeline %d history: malformed line %q", current, line)
		}
		tli, err := strconv.ParseInt(f[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("timeline %d history: line %q: %w", current, line, err)
		}
		end, err := pglogrepl.ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("timeline %d history: line %q: %w", current, line, err)
		}
		chain = append(chain, timelineSpan{tli: int32(tli), start: start, end: end})
		start = end
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("timeline %d history: %w", current, err)
	}
	return append(chain, timelineSpan{tli: current, start: start, end: math.MaxUint64}), nil
}

// sourceHistory is what a session knows of the source's WAL history: its
// system identifier and, on a primary whose history could be read, its
// chain of timelines.
type sourceHistory struct {
	systemID string
	chain    []timelineSpan
}

// at is the WAL history of a frame that ends at end: the timeline of the
// chain that holds end. A frame that ends where a timeline ended is on that
// one, which its descendants share.
func (h sourceHistory) at(end pglogrepl.LSN) txlog.WALHistory {
	w := txlog.WALHistory{SystemID: h.systemID}
	for _, sp := range h.chain {
		if end <= sp.end {
			w.Timeline, w.TimelineStart = sp.tli, sp.start
			break
		}
	}
	return w
}

// checkSource identifies the WAL history the source is on (IDENTIFY_SYSTEM,
// TIMELINE_HISTORY on the replication connection), records it for the
// positions the session writes, and stops the producer when the position
// Kafka holds for the slot is not on that history: the source went back (a
// restore to an earlier point, a failover to a standby that had replayed
// less, a cluster made anew with initdb). Its new commits would then be
// taken for ones Kafka holds and skipped, or ordered among transactions
// that its history does not have.
//
// A position recorded before the source was (a state from an earlier
// producer) is checked against the WAL's end only; so is one read from a
// standby, whose timeline follows its primary's while it streams, or when
// the history cannot be read. A copy of the cluster started on the same
// timeline (a file-system snapshot, without recovery to a new timeline)
// is caught only while its WAL ends below the position.
func (s *session) checkSource(ctx context.Context, slot slotInfo) error {
	id, err := pglogrepl.IdentifySystem(ctx, s.repl)
	if err != nil {
		return fmt.Errorf("identify the source (IDENTIFY_SYSTEM): %w", err)
	}
	var standby bool
	if err := s.db.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&standby); err != nil {
		return fmt.Errorf("source: pg_is_in_recovery(): %w", err)
	}
	h := sourceHistory{systemID: id.SystemID}
	if !standby {
		h.chain = []timelineSpan{{tli: id.Timeline, end: math.MaxUint64}}
		if id.Timeline > 1 {
			chain, err := s.timelineHistory(ctx, id.Timeline)
			if err != nil {
				s.log.Warn("the source's timeline history cannot be read: the position is checked against its system identifier "+
					"and WAL end only", "timeline", id.Timeline, "error", err)
			}
			h.chain = chain
		}
	}
	s.state.source = h
	var confirmed pglogrepl.LSN
	if slot.exists && slot.confirmed != nil {
		if confirmed, err = pglogrepl.ParseLSN(*slot.confirmed); err != nil {
			return fmt.Errorf("slot %s confirmed_flush_lsn %q: %w", s.cfg.Slot, *slot.confirmed, err)
		}
	}
	pos := s.state.st.Position
	why, adopted := offHistory(pos, h, id.XLogPos, standby, slot.exists, confirmed, s.cfg.AdoptSource)
	if why == "" && adopted {
		s.log.Warn("adopting another PostgreSQL cluster as the source (--adopt-source): its commits after the position are streamed",
			"slot", s.cfg.Slot, "system_id", id.SystemID, "recorded_system_id", pos.Source.SystemID, "commit_lsn", pos.CommitLSN,
			"slot_exists", slot.exists)
	}
	if why == "" {
		return nil
	}
	return retry.Terminal(fmt.Errorf("%s; Kafka holds slot %s's transactions up to commit LSN %s (end %s, xid %d), and "+
		"the source's new commits would be taken for ones Kafka already holds or ordered among transactions its "+
		"history does not have: give the producer a new --prefix (and point the consumers at it)",
		why, s.cfg.Slot, pos.CommitLSN, pos.EndLSN, pos.Xid))
}

// timelineHistory reads the chain of timelines that led to timeline tli.
func (s *session) timelineHistory(ctx context.Context, tli int32) ([]timelineSpan, error) {
	h, err := pglogrepl.TimelineHistory(ctx, s.repl, tli)
	if err != nil {
		return nil, fmt.Errorf("TIMELINE_HISTORY %d: %w", tli, err)
	}
	return parseTimelineHistory(h.Content, tli)
}

// offHistory says why pos is not on the source's WAL history h, given its
// WAL end, whether it is a standby, whether the slot is there and where it
// is confirmed, and whether another cluster may be adopted; "" when pos
// may be on h. adopted reports another cluster let through by adopt.
func offHistory(pos txlog.Position, h sourceHistory, walEnd pglogrepl.LSN, standby, slotExists bool, confirmed pglogrepl.LSN,
	adopt bool) (why string, adopted bool) {
	if pos.EndLSN == 0 {
		return "", false
	}
	was := pos.Source
	switch {
	case was.SystemID == "":
	case was.SystemID != h.systemID && !adopt:
		return fmt.Sprintf("the source is another PostgreSQL cluster (system identifier %s) than the one the position was read "+
			"from (%s): a cluster made anew, or one that pg_upgrade made (for that, start the producer with --adopt-source)",
			h.systemID, was.SystemID), false
	case was.SystemID != h.systemID:
		adopted = true
		if slotExists && confirmed < pos.EndLSN {
			return fmt.Sprintf("the source is another PostgreSQL cluster (system identifier %s, --adopt-source), and its slot is "+
				"confirmed to %s, below the position, where its commits would be skipped (drop the slot, and the producer "+
				"makes a new one and reads the captured tables again)", h.systemID, confirmed), true
		}
	case was.Timeline == 0 || h.chain == nil:
	default:
		var on *timelineSpan
		for i := range h.chain {
			if h.chain[i].tli == was.Timeline {
				on = &h.chain[i]
			}
		}
		cur := h.chain[len(h.chain)-1]
		switch {
		case on == nil:
			return fmt.Sprintf("the source's timeline %d does not descend from timeline %d, which the position is on", cur.tli, was.Timeline), false
		case on.start != was.TimelineStart:
			return fmt.Sprintf("the source's timeline %d began at %s, the position's at %s: another cluster promoted from the same parent",
				on.tli, on.start, was.TimelineStart), false
		case pos.EndLSN > on.end:
			return fmt.Sprintf("the source's history left timeline %d at %s, below the position (a restore to an earlier point, "+
				"or a failover to a standby that had replayed less)", on.tli, on.end), false
		}
	}
	if !standby && walEnd < pos.EndLSN {
		return fmt.Sprintf("the source's WAL ends at %s, below the position (a restore, a failover to a standby that had replayed "+
			"less, or a cluster made anew)", walEnd), adopted
	}
	return "", adopted
}
