package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// A Signal is a request to the producer of one slot. It travels through the
// source's WAL as a transactional logical decoding message (prefix
// SignalPrefix), so it needs no signal table, takes effect at its place in
// the stream, reaches a producer that is down when it restarts, and is
// acted on exactly once: its transaction gets a frame, which moves the
// producer's position past it. `tributary snapshot` sends them.
type Signal struct {
	Slot   string       `json:"slot"`
	ID     string       `json:"id"`
	Action SignalAction `json:"action"`
	// Tables are schema.table (a name without a schema is in public).
	// Empty means every captured table for SignalSnapshot, and every
	// active online snapshot for the others.
	Tables []string `json:"tables,omitempty"`
}

// SignalAction is what a Signal asks for.
type SignalAction string

// The signal actions.
const (
	SignalSnapshot SignalAction = "snapshot" // take an online snapshot of the tables (again, if one was taken)
	SignalPause    SignalAction = "pause"    // read no more chunks of their active snapshots
	SignalResume   SignalAction = "resume"   // read the chunks of their paused snapshots again
	SignalCancel   SignalAction = "cancel"   // end their active snapshots
)

// SendSignal writes sig into the source's WAL on conn, in a transaction of
// its own, and returns the LSN of the message.
func SendSignal(ctx context.Context, conn *pgx.Conn, sig Signal) (pglogrepl.LSN, error) {
	switch sig.Action {
	case SignalSnapshot, SignalPause, SignalResume, SignalCancel:
	default:
		return 0, fmt.Errorf("signal: unknown action %q", sig.Action)
	}
	if sig.Slot == "" || sig.ID == "" {
		return 0, errors.New("signal: slot and id are required")
	}
	for i, t := range sig.Tables {
		sig.Tables[i] = txlog.QualifyTable(t)
	}
	b, err := json.Marshal(sig)
	if err != nil {
		return 0, err
	}
	var lsn pglogrepl.LSN
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.pg_logical_emit_message(true, $1, $2::text)`, SignalPrefix, string(b)).Scan(&lsn); err != nil {
		return 0, fmt.Errorf("signal %s: %w", sig.Action, err)
	}
	return lsn, nil
}

// signal acts on a signal message of the current source transaction.
func (s *session) signal(ctx context.Context, m *pglogrepl.LogicalDecodingMessage) error {
	var sig Signal
	if err := json.Unmarshal(m.Content, &sig); err != nil {
		s.log.Warn("ignoring a signal that is not JSON", "lsn", m.LSN, "err", err)
		return nil
	}
	if sig.Slot != s.cfg.Slot {
		return nil
	}
	wanted := map[string]bool{}
	for _, t := range sig.Tables {
		wanted[txlog.QualifyTable(t)] = true
	}
	s.tx.forceFrame = true
	log := s.log.With("signal", sig.Action, "id", sig.ID, "lsn", m.LSN)
	var acted []string
	for _, t := range s.state.st.SortedTables() {
		name := t.Name()
		if len(wanted) > 0 && !wanted[name] {
			continue
		}
		delete(wanted, name)
		sn := t.Snapshot
		switch sig.Action {
		case SignalSnapshot:
			if t.Status != txlog.TableCaptured {
				log.Warn("not snapshotting a table the producer does not capture", "table", name, "status", t.Status)
				continue
			}
			if sn != nil && sn.ID == sig.ID {
				continue // already acted on
			}
			s.online.dropTable(name)
			t.Snapshot = &txlog.Snapshot{ID: sig.ID, Kind: txlog.SnapshotOnline, Status: txlog.SnapshotPending, Reason: "requested",
				Requested: s.tx.commitTime.UTC(), RequestLSN: s.tx.commitLSN}
		case SignalPause:
			if sn == nil || sn.Kind != txlog.SnapshotOnline || sn.Status != txlog.SnapshotPending && sn.Status != txlog.SnapshotRunning {
				continue
			}
			sn.Status = txlog.SnapshotPaused
		case SignalResume:
			if sn == nil || sn.Status != txlog.SnapshotPaused {
				continue
			}
			sn.Status = txlog.SnapshotRunning
		case SignalCancel:
			if sn == nil || sn.Kind != txlog.SnapshotOnline || !sn.Status.Active() {
				continue
			}
			sn.Status, sn.Reason, sn.Finished = txlog.SnapshotCancelled, "cancelled on request", now()
			s.online.dropTable(name)
		}
		s.state.changed(t)
		s.setPending(t)
		acted = append(acted, name)
	}
	for name := range wanted {
		log.Warn("signal names a table the producer does not know", "table", name)
	}
	if len(acted) == 0 {
		log.Info("signal changed nothing")
		return nil
	}
	log.Info("signal", "tables", strings.Join(acted, ","))
	if sig.Action == SignalSnapshot {
		s.tx.request = &schemas.SnapshotRequest{Slot: s.cfg.Slot, ID: sig.ID, Tables: acted}
	}
	return s.online.schedule(ctx)
}
