package txlog

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

// StateVersion is the version of the state documents this package writes.
// A reader refuses documents of a newer version.
const StateVersion = 1

// State is one producer's durable state (one slot of one prefix): where its
// stream stands and what it knows of each table. The producer writes the
// parts that change in the same Kafka transaction as the frames they
// describe, on the compacted topic schemas.StateTopic.
type State struct {
	Slot string
	// Position is the last source transaction framed in Kafka; zero when
	// none is.
	Position Position
	// Tables is every table the producer has seen published, by
	// "schema.table" (unquoted).
	Tables map[string]*TableState
}

// NewState returns an empty state of slot.
func NewState(slot string) *State { return &State{Slot: slot, Tables: map[string]*TableState{}} }

// Empty reports whether nothing is recorded for the slot.
func (s *State) Empty() bool { return s.Position.CommitLSN == 0 && len(s.Tables) == 0 }

// Position is the last source transaction whose frame Kafka holds: the
// producer's dedupe point. A restart skips every source transaction that
// committed at or below CommitLSN.
type Position struct {
	CommitLSN  pglogrepl.LSN `json:"commit_lsn"`
	EndLSN     pglogrepl.LSN `json:"end_lsn"` // end of its commit record: what the slot may be confirmed to
	Xid        uint32        `json:"xid"`
	CommitTime time.Time     `json:"commit_ts"`
	// Source is the WAL history the transaction is on; zero in a state
	// written before it was recorded.
	Source WALHistory `json:"source,omitzero"`
}

// WALHistory names a WAL history: a PostgreSQL cluster, by the system
// identifier initdb gave it, and one of its timelines, which a promotion
// or a recovery to a point in time starts, with the LSN at which that
// timeline began (0 for a cluster's first). Two clusters promoted from one
// parent can both be on timeline 2: the start tells them apart unless
// they forked at one LSN.
type WALHistory struct {
	SystemID      string        `json:"system_id"`
	Timeline      int32         `json:"timeline"`
	TimelineStart pglogrepl.LSN `json:"timeline_start"`
}

// TableStatus says how the producer captures a table.
type TableStatus string

// The table statuses.
const (
	// TableCaptured: the table's changes are published since CapturedFrom.
	TableCaptured TableStatus = "captured"
	// TableExcluded: the table is published, but not among the producer's
	// --tables; its changes are not written.
	TableExcluded TableStatus = "excluded"
	// TableRemoved: the table left the publication (or was dropped).
	TableRemoved TableStatus = "removed"
)

// TableState is what the producer knows of one table.
type TableState struct {
	Schema string      `json:"schema"`
	Table  string      `json:"table"`
	OID    uint32      `json:"oid"`
	Status TableStatus `json:"status"`
	// CapturedFrom is the source position from which the table's changes
	// are in Kafka: the initial snapshot's consistent point, or where the
	// producer first saw the table.
	CapturedFrom pglogrepl.LSN `json:"captured_from"`
	// Snapshot is the table's latest snapshot; nil when none was taken.
	Snapshot *Snapshot `json:"snapshot,omitempty"`
}

// Name is "schema.table", unquoted, the key of State.Tables.
func (t *TableState) Name() string { return t.Schema + "." + t.Table }

// SnapshotKind is how a snapshot reads a table.
type SnapshotKind string

// The snapshot kinds.
const (
	// SnapshotInitial reads in the slot's exported snapshot, before
	// streaming starts; its chunks carry the consistent point.
	SnapshotInitial SnapshotKind = "initial"
	// SnapshotOnline reads while streaming, chunk by chunk, each chunk
	// between a low and a high watermark in the stream (DBLog).
	SnapshotOnline SnapshotKind = "online"
)

// SnapshotStatus is where a snapshot stands.
type SnapshotStatus string

// The snapshot statuses.
const (
	SnapshotPending   SnapshotStatus = "pending"   // requested, no chunk written yet
	SnapshotRunning   SnapshotStatus = "running"   // chunks being written
	SnapshotPaused    SnapshotStatus = "paused"    // no chunk is read until resumed
	SnapshotDone      SnapshotStatus = "done"      // every range read (or made moot by a truncate)
	SnapshotCancelled SnapshotStatus = "cancelled" // stopped on request before it was done
)

// Active reports whether the snapshot still has chunks to write (pending,
// running or paused): while it is active, changes to rows it has not read
// yet may reach a sink before the rows themselves.
func (s SnapshotStatus) Active() bool {
	return s == SnapshotPending || s == SnapshotRunning || s == SnapshotPaused
}

// Snapshot is the progress of one table's snapshot.
type Snapshot struct {
	// ID names the snapshot: "initial", or the request's ID.
	ID     string         `json:"id"`
	Kind   SnapshotKind   `json:"kind"`
	Status SnapshotStatus `json:"status"`
	// Reason says why it was taken or why it ended early.
	Reason string `json:"reason,omitempty"`
	// ConsistentPoint is the slot's consistent point, for an initial
	// snapshot.
	ConsistentPoint pglogrepl.LSN `json:"consistent_point,omitempty"`
	// Chunking is how the table is read: in key order (ChunkingKey), or by
	// ranges of heap blocks (ChunkingCtid) when it has no unique key with
	// an ordering.
	Chunking string `json:"chunking,omitempty"`
	// ChunkBlocks is the heap blocks of one chunk, with ChunkingCtid.
	ChunkBlocks int64 `json:"chunk_blocks,omitempty"`
	// Ranges split the table between workers; nil until the snapshot is
	// planned.
	Ranges []KeyRange `json:"ranges,omitempty"`
	// Chunks and Rows count what was written to Kafka.
	Chunks int64 `json:"chunks"`
	Rows   int64 `json:"rows"`
	// Estimate is the table's row count estimate when the snapshot started.
	Estimate int64 `json:"estimate"`
	// RequestLSN is the commit LSN of the frame that marks a requested
	// snapshot's start (schemas.Frame.Request): a consumer bootstrapping
	// from the snapshot starts there.
	RequestLSN pglogrepl.LSN `json:"request_lsn,omitempty"`
	Requested  time.Time     `json:"requested"`
	Finished   time.Time     `json:"finished,omitzero"`
}

// The ways a snapshot reads a table.
const (
	ChunkingKey  = ""     // key order, keyset pagination
	ChunkingCtid = "ctid" // ranges of heap blocks
)

// KeyRange is one part of a table, read chunk by chunk: a range of its key
// order (keys are the text forms of the key columns), or, with
// ChunkingCtid, a range of heap blocks.
type KeyRange struct {
	From  []string `json:"from,omitempty"`  // exclusive lower bound; nil: the first key
	To    []string `json:"to,omitempty"`    // inclusive upper bound; nil: the last key
	After []string `json:"after,omitempty"` // the last key written; nil: none yet
	// StartBlock, EndBlock and NextBlock are the heap blocks [Start, End)
	// and the next one to read, with ChunkingCtid.
	StartBlock int64 `json:"start_block,omitempty"`
	EndBlock   int64 `json:"end_block,omitempty"`
	NextBlock  int64 `json:"next_block,omitempty"`
	Done       bool  `json:"done,omitempty"`
}

// Resume is the exclusive lower bound of the range's next chunk.
func (r *KeyRange) Resume() []string {
	if r.After != nil {
		return r.After
	}
	return r.From
}

// Done reports whether every range is read.
func (s *Snapshot) Done() bool {
	if len(s.Ranges) == 0 {
		return false
	}
	for _, r := range s.Ranges {
		if !r.Done {
			return false
		}
	}
	return true
}

// document is the JSON value of a state record.
type document struct {
	V        int         `json:"v"`
	Slot     string      `json:"slot"`
	Position *Position   `json:"position,omitempty"`
	Table    *TableState `json:"table,omitempty"`
}

func positionKey(slot string) string { return slot + "/position" }

func tableKey(slot, schema, table string) string {
	return slot + "/table/" + schemas.QuoteIdent(schema) + "." + schemas.QuoteIdent(table)
}

// PositionRecord is the state record of slot's position, for topic.
func PositionRecord(topic, slot string, p Position) *kgo.Record {
	return stateRecord(topic, positionKey(slot), document{V: StateVersion, Slot: slot, Position: &p})
}

// TableRecord is the state record of one table, for topic. A nil t's
// record would be a tombstone; use TableTombstone for that.
func TableRecord(topic, slot string, t *TableState) *kgo.Record {
	return stateRecord(topic, tableKey(slot, t.Schema, t.Table), document{V: StateVersion, Slot: slot, Table: t})
}

// TableTombstone deletes the record of one table from the compacted topic.
func TableTombstone(topic, slot, schema, table string) *kgo.Record {
	return &kgo.Record{Topic: topic, Partition: 0, Key: []byte(tableKey(slot, schema, table))}
}

func stateRecord(topic, key string, d document) *kgo.Record {
	b, err := json.Marshal(d)
	if err != nil {
		panic(fmt.Sprintf("txlog: marshal state: %v", err)) // only plain values: cannot fail
	}
	return &kgo.Record{Topic: topic, Partition: 0, Key: []byte(key), Value: b}
}

// ReadState reads slot's state from topic: every committed record from the
// log start to the end, the last value of each key winning. A topic that
// does not exist gives an empty state. The topic is compacted, so its
// length follows the number of tables, not the age of the log.
func ReadState(ctx context.Context, opts []kgo.Opt, adm *kadm.Client, topic, slot string) (*State, error) {
	all, err := readStates(ctx, opts, adm, topic, func(s string) bool { return s == slot })
	if st := all[slot]; st != nil || err != nil {
		return st, err
	}
	return NewState(slot), nil
}

// ReadStates reads the state of every slot that wrote to topic, by slot.
func ReadStates(ctx context.Context, opts []kgo.Opt, adm *kadm.Client, topic string) (map[string]*State, error) {
	return readStates(ctx, opts, adm, topic, func(string) bool { return true })
}

func readStates(ctx context.Context, opts []kgo.Opt, adm *kadm.Client, topic string, want func(slot string) bool) (map[string]*State, error) {
	out := map[string]*State{}
	b, err := PartitionBounds(ctx, adm, topic, 0)
	if err != nil || b.Empty() {
		return out, err
	}
	tableKeys := map[string]string{} // record key -> table name, for tombstones
	err = ReadRange(ctx, opts, topic, 0, b.Start, b.End, func(r *kgo.Record) error {
		key := string(r.Key)
		slot, _, ok := strings.Cut(key, "/")
		if !ok || !want(slot) {
			return nil
		}
		st := out[slot]
		if st == nil {
			st = NewState(slot)
			out[slot] = st
		}
		if r.Value == nil {
			if name, ok := tableKeys[key]; ok {
				delete(st.Tables, name)
			}
			return nil
		}
		var d document
		if err := json.Unmarshal(r.Value, &d); err != nil {
			return fmt.Errorf("%w: %s offset %d key %q: %w", ErrMalformed, topic, r.Offset, key, err)
		}
		if d.V > StateVersion {
			return fmt.Errorf("%s offset %d: state version %d is newer than this program's %d: upgrade it", topic, r.Offset, d.V, StateVersion)
		}
		switch {
		case d.Position != nil:
			st.Position = *d.Position
		case d.Table != nil:
			st.Tables[d.Table.Name()] = d.Table
			tableKeys[key] = d.Table.Name()
		}
		return nil
	})
	return out, err
}

// FoundSnapshot is an online snapshot found by ID in the state of any slot.
type FoundSnapshot struct {
	Slot       string
	ID         string
	RequestLSN pglogrepl.LSN             // where its request frame is
	Requested  time.Time                 // the request's commit time at the source
	Tables     map[string]SnapshotStatus // by QualifyTable's "schema.table"
}

// QualifyTable is how a table name of a snapshot signal or of a consumer's
// --tables is matched with the state's tables: trimmed, and in public
// when it has no schema.
func QualifyTable(t string) string {
	t = strings.TrimSpace(t)
	if !strings.Contains(t, ".") {
		return "public." + t
	}
	return t
}

// FindSnapshot finds the requested online snapshot id in topic's states;
// id "latest" finds the most recently requested one that was not
// cancelled. It returns nil when there is none.
func FindSnapshot(ctx context.Context, opts []kgo.Opt, adm *kadm.Client, topic, id string) (*FoundSnapshot, error) {
	states, err := ReadStates(ctx, opts, adm, topic)
	if err != nil {
		return nil, err
	}
	var found *FoundSnapshot
	for slot, st := range states {
		for _, t := range st.Tables {
			sn := t.Snapshot
			if sn == nil || sn.RequestLSN == 0 || id != "latest" && sn.ID != id || id == "latest" && sn.Status == SnapshotCancelled {
				continue
			}
			if found == nil || found.ID != sn.ID && sn.RequestLSN > found.RequestLSN {
				found = &FoundSnapshot{Slot: slot, ID: sn.ID, RequestLSN: sn.RequestLSN, Requested: sn.Requested, Tables: map[string]SnapshotStatus{}}
			}
			if found.ID == sn.ID {
				found.Tables[t.Name()] = sn.Status
			}
		}
	}
	return found, nil
}

// SortedTables returns the state's tables ordered by name.
func (s *State) SortedTables() []*TableState {
	out := make([]*TableState, 0, len(s.Tables))
	for _, t := range s.Tables {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}
