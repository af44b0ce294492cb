package conflict

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/tributary-cdc/tributary/schemas"
)

// The conflicts topic: <prefix>.conflicts holds the conflicts detected,
// at any site, while applying the changes of prefix's producer. Keys and
// values are Avro in the Confluent wire format, registered under
// TopicNameStrategy (<topic>-key, <topic>-value), like the data topics.

// ConflictSchema is the value schema of the conflicts topic (conflict.avsc).
//
//go:embed conflict.avsc
var ConflictSchema string

// ConflictKeySchema is the key schema of the conflicts topic: the table and
// its row's key, as canonical JSON (object keys sorted), so that the records
// of one row share a partition and stay in order.
const ConflictKeySchema = `{"type":"record","name":"ConflictKey","namespace":"tributary",` +
	`"doc":"The row a conflict record is about.","fields":[` +
	`{"name":"table","type":"string","doc":"schema.table"},` +
	`{"name":"key","type":"string","doc":"The key columns as a JSON object of column name to text, keys sorted."}]}`

// Headers of a conflicts topic record.
const (
	// HeaderWriter names the consumer that published the record:
	// <site>/<consumer>/<the target cluster's system identifier>.
	HeaderWriter = "tributary.conflict.writer"
	// HeaderPosition is the record's place in its writer's outbox order:
	// <recording transaction id>:<row id>.
	HeaderPosition = "tributary.conflict.position"
)

// ConflictsTopic is the conflicts topic of prefix.
func ConflictsTopic(prefix string) string { return prefix + ".conflicts" }

var (
	conflictCodec = mustCodec(ConflictSchema)
	keyCodec      = mustCodec(ConflictKeySchema)
)

func mustCodec(schema string) *goavro.Codec {
	c, err := goavro.NewCodec(schema)
	if err != nil {
		panic(err)
	}
	return c
}

// nativeRow is a row as the schema's map of nullable strings.
func nativeRow(r Row) map[string]any {
	m := make(map[string]any, len(r))
	for k, v := range r {
		if v == nil {
			m[k] = nil
		} else {
			m[k] = goavro.Union("string", *v)
		}
	}
	return m
}

func nullableRow(r Row) any {
	if r == nil {
		return nil
	}
	return goavro.Union("map", nativeRow(r))
}

func nullableString(s string) any {
	if s == "" {
		return nil
	}
	return goavro.Union("string", s)
}

func nullableTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return goavro.Union("long.timestamp-micros", t.UTC())
}

// encodeValue is r in the value schema's binary encoding (without the wire
// format's header).
func encodeValue(r Record) ([]byte, error) {
	return conflictCodec.BinaryFromNative(nil, map[string]any{
		"id": r.ID, "detected_at": r.DetectedAt.UTC(), "site": r.Site, "remote_site": r.RemoteSite, "consumer": r.Consumer,
		"table": r.Table, "key": nativeRow(r.Key), "kind": string(r.Kind), "group": r.Group, "method": string(r.Method),
		"outcome": string(r.Outcome), "local": nullableRow(r.Local), "remote_before": nullableRow(r.RemoteBefore),
		"remote_after": nullableRow(r.RemoteAfter), "resolved": nullableRow(r.Resolved), "commit_lsn": nullableString(r.CommitLSN),
		"xid": int64(r.Xid), "remote_commit_time": nullableTime(r.CommitTime), "local_site": nullableString(r.LocalSite),
		"local_commit_time": nullableTime(r.LocalCommitTime), "detail": nullableString(r.Detail),
	})
}

// encodeKey is r's key in the key schema's binary encoding.
func encodeKey(r Record) ([]byte, error) {
	return keyCodec.BinaryFromNative(nil, map[string]any{"table": r.Table, "key": keyText(r.Key)})
}

// DecodeRecord decodes a value of the conflicts topic (Confluent wire
// format) with the schema the registry has for its ID.
func DecodeRecord(ctx context.Context, reg *schemas.Registry, value []byte) (Record, error) {
	id, body, err := schemas.SplitWire(value)
	if err != nil {
		return Record{}, err
	}
	codec, err := reg.Codec(ctx, id)
	if err != nil {
		return Record{}, err
	}
	native, _, err := codec.NativeFromBinary(body)
	if err != nil {
		return Record{}, fmt.Errorf("conflict record (schema %d): %w", id, err)
	}
	m, ok := native.(map[string]any)
	if !ok {
		return Record{}, fmt.Errorf("conflict record (schema %d): not a record", id)
	}
	return recordFromNative(m), nil
}

func unionValue(v any) any {
	if u, ok := v.(map[string]any); ok && len(u) == 1 {
		for _, x := range u {
			return x
		}
	}
	return v
}

func rowFromNative(v any) Row {
	v = unionValue(v)
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	r := make(Row, len(m))
	for k, x := range m {
		if s, ok := unionValue(x).(string); ok {
			r[k] = &s
		} else {
			r[k] = nil
		}
	}
	return r
}

func recordFromNative(m map[string]any) Record {
	str := func(k string) string { s, _ := unionValue(m[k]).(string); return s }
	tm := func(k string) time.Time {
		t, _ := unionValue(m[k]).(time.Time)
		if !t.IsZero() {
			t = t.UTC()
		}
		return t
	}
	id, _ := m["id"].(int64)
	xid, _ := m["xid"].(int64)
	return Record{ID: id, DetectedAt: tm("detected_at"), Site: str("site"), RemoteSite: str("remote_site"), Consumer: str("consumer"),
		Table: str("table"), Key: rowFromNative(map[string]any{"map": m["key"]}), Kind: Kind(str("kind")), Group: str("group"),
		Method: Method(str("method")), Outcome: Outcome(str("outcome")), Local: rowFromNative(m["local"]),
		RemoteBefore: rowFromNative(m["remote_before"]), RemoteAfter: rowFromNative(m["remote_after"]),
		Resolved: rowFromNative(m["resolved"]), CommitLSN: str("commit_lsn"), Xid: uint32(xid), CommitTime: tm("remote_commit_time"),
		LocalSite: str("local_site"), LocalCommitTime: tm("local_commit_time"), Detail: str("detail")}
}

// rowFromJSON parses a jsonb row of tributary_conflicts.
func rowFromJSON(b []byte) (Row, error) {
	if b == nil {
		return nil, nil
	}
	var r Row
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return r, nil
}

// sortedKeys is m's keys in order (for stable log output).
func sortedKeys(m map[int32]int64) []int32 {
	out := make([]int32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
