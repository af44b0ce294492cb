package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// dbzRecord is one data record as a generic Avro reader sees it: goavro
// with the writer schema the registry holds for the record's schema ID.
type dbzRecord struct {
	rec   *kgo.Record
	key   map[string]any
	value map[string]any // nil for a tombstone
}

func (r dbzRecord) header(k string) string {
	for _, h := range r.rec.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

func (r dbzRecord) source() map[string]any { return r.value["source"].(map[string]any) }

// opt is the value inside a goavro union, or nil.
func opt(v any) any { return schemas.UnwrapUnion(v) }

// dbzDecode decodes a wire-format key or value through the registry.
func dbzDecode(t *testing.T, e *env, b []byte) (map[string]any, string) {
	t.Helper()
	id, body, err := schemas.SplitWire(b)
	if err != nil {
		t.Fatal(err)
	}
	codec, raw, err := e.reg.CodecAndSchema(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	v, rest, err := codec.NativeFromBinary(body)
	if err != nil || len(rest) != 0 {
		t.Fatalf("decode schema %d: %v (%d bytes left)", id, err, len(rest))
	}
	return v.(map[string]any), raw
}

// TestProducerDebeziumEnvelope runs `tributary producer --envelope debezium
// --tombstones` on an initial snapshot and a stream of inserts, updates
// (one leaving a TOASTed value unchanged), a delete, a key change and a
// truncate; reads every frame and, frame by frame, exactly the records it
// counts, decoded with the registry's writer schemas; checks the envelope
// fields Debezium's PostgreSQL connector writes for each; then replays the
// prefix with `tributary consumer` into a second database and compares it
// with the source.
func TestProducerDebeziumEnvelope(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	const tables = `CREATE TABLE items (id int PRIMARY KEY, name text, big text, price numeric(10,2), tags text[]);
		CREATE TABLE other (k int PRIMARY KEY, v text)`
	e.pg.Exec(t, tables,
		`INSERT INTO items VALUES (100, 'snap', 'x', 1.50, '{a}'), (101, 'snap2', NULL, NULL, NULL)`,
		`INSERT INTO other VALUES (1, 'one')`,
		`CREATE PUBLICATION pub FOR TABLE items, other`)
	target.Exec(t, tables)
	const placeholder = "__unavailable__"
	prod := harness.StartTributary(t, nil, "producer", "--source", e.pg.DSN, "--brokers", e.kafka.Brokers[0],
		"--registry", e.kafka.RegistryURL, "--prefix", e.prefix, "--publication", "pub", "--slot", "slot",
		"--envelope", "debezium", "--tombstones", "--toast-placeholder", placeholder, "--heartbeat-interval", "-1s")
	e.waitSlotActive(t, "slot", prod)
	// A value PostgreSQL stores out of line (TOAST): incompressible text.
	e.pg.Exec(t, `INSERT INTO items SELECT 1, 'a', string_agg(md5(g::text), ''), 2.25, '{x,y}' FROM generate_series(1, 4000) g`)
	e.pg.Exec(t, `BEGIN; INSERT INTO items VALUES (2, 'b', 'small', NULL, NULL), (3, 'c', NULL, 3.00, '{}');
		INSERT INTO other VALUES (2, 'two'); COMMIT`)
	e.pg.Exec(t, `UPDATE items SET name = 'a2' WHERE id = 1`) // big is unchanged TOAST
	e.pg.Exec(t, `DELETE FROM items WHERE id = 2`)
	e.pg.Exec(t, `UPDATE items SET id = 10 WHERE id = 3`) // a key change: delete, tombstone, insert
	e.pg.Exec(t, `TRUNCATE other`)
	e.pg.Exec(t, `INSERT INTO other VALUES (5, 'five')`)
	const wantFrames = 2 + 7 // two snapshot chunks, seven transactions
	e.waitFrameCount(t, wantFrames)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The frames, through txlog (the frame format is the same with both
	// envelopes), and every record of the data topics.
	dec := txlog.NewFrameDecoder(e.reg)
	var frames []schemas.Frame
	for _, r := range harness.ReadTopic(ctx, t, e.kafka, schemas.TransactionsTopic(e.prefix)) {
		f, err := dec.Decode(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
	}
	if len(frames) != wantFrames {
		t.Fatalf("%d frames, want %d", len(frames), wantFrames)
	}
	type tp struct {
		topic string
		part  int32
	}
	parts := map[tp][]*kgo.Record{}
	for _, tbl := range []string{"items", "other"} {
		for _, r := range harness.ReadTopic(ctx, t, e.kafka, schemas.TopicName(e.prefix, "public", tbl)) {
			parts[tp{r.Topic, r.Partition}] = append(parts[tp{r.Topic, r.Partition}], r)
		}
	}
	// Frame by frame, exactly the records each counts, merged by position.
	var txns [][]dbzRecord
	for fi, f := range frames {
		var recs []*kgo.Record
		for _, pc := range f.Partitions {
			k := tp{pc.Topic, pc.Partition}
			if int64(len(parts[k])) < pc.Count {
				t.Fatalf("frame %d counts %d records in %s[%d], %d left", fi, pc.Count, pc.Topic, pc.Partition, len(parts[k]))
			}
			recs = append(recs, parts[k][:pc.Count]...)
			parts[k] = parts[k][pc.Count:]
		}
		if int64(len(recs)) != f.Events {
			t.Fatalf("frame %d: event_count %d, partitions count %d", fi, f.Events, len(recs))
		}
		byPos := make([]dbzRecord, len(recs))
		for _, r := range recs {
			var d dbzRecord
			d.rec = r
			if got := d.header(schemas.HeaderCommitLSN); got != strconv.FormatUint(uint64(f.CommitLSN), 10) {
				t.Fatalf("frame %d: record %s[%d]@%d has commit LSN %s, frame %d", fi, r.Topic, r.Partition, r.Offset, got, uint64(f.CommitLSN))
			}
			pos, err := strconv.Atoi(d.header(schemas.HeaderPosition))
			if err != nil || pos >= len(recs) || byPos[pos].rec != nil {
				t.Fatalf("frame %d: bad or repeated position %q", fi, d.header(schemas.HeaderPosition))
			}
			if r.Key != nil {
				d.key, _ = dbzDecode(t, e, r.Key)
			}
			if r.Value != nil {
				var raw string
				d.value, raw = dbzDecode(t, e, r.Value)
				var sch map[string]any
				_ = json.Unmarshal([]byte(raw), &sch)
				ns := schemas.DebeziumNamespace(e.prefix, "public", strings.TrimPrefix(r.Topic, e.prefix+".public."))
				if sch["name"] != "Envelope" || sch["namespace"] != ns {
					t.Fatalf("value schema %v.%v, want %s.Envelope", sch["namespace"], sch["name"], ns)
				}
			}
			byPos[pos] = d
		}
		txns = append(txns, byPos)
	}
	for k, rest := range parts {
		if len(rest) > 0 {
			t.Fatalf("%d records of %s[%d] are in no frame", len(rest), k.topic, k.part)
		}
	}

	ops := func(tx []dbzRecord) string {
		var s []string
		for _, r := range tx {
			if r.value == nil {
				s = append(s, "tombstone")
			} else {
				s = append(s, r.value["op"].(string))
			}
		}
		return strings.Join(s, ",")
	}
	want := []string{"r,r", "r", "c", "c,c,c", "u", "d,tombstone", "d,tombstone,c", "t,t,t", "c"}
	snapshotFrames := 0
	for _, f := range frames {
		if f.Snapshot != nil {
			snapshotFrames++
		}
	}
	// The two snapshot chunks come first, in either table order.
	if ops(txns[0]) == "r" {
		txns[0], txns[1] = txns[1], txns[0]
		frames[0], frames[1] = frames[1], frames[0]
	}
	for i, tx := range txns {
		if got := ops(tx); got != want[i] {
			t.Fatalf("transaction %d: ops %s, want %s", i, got, want[i])
		}
	}
	if snapshotFrames != 2 {
		t.Fatalf("%d snapshot frames, want 2", snapshotFrames)
	}

	lastEnd := uint64(0) // the previous stream transaction's end; 0 before the first
	for i, tx := range txns {
		f := frames[i]
		perTable := map[string]int64{}
		for n, r := range tx {
			if r.value == nil { // a tombstone: the delete's key and partition
				prev := tx[n-1]
				if !bytes.Equal(r.rec.Key, prev.rec.Key) || r.rec.Partition != prev.rec.Partition || prev.value["op"] != "d" {
					t.Fatalf("transaction %d: tombstone at %d does not follow its delete with the same key and partition", i, n)
				}
				continue
			}
			v, src := r.value, r.source()
			op := v["op"].(string)
			table := src["table"].(string)
			must := func(ok bool, format string, args ...any) {
				t.Helper()
				if !ok {
					t.Fatalf("transaction %d record %d (%s on %s): %s\nvalue %v", i, n, op, table, fmt.Sprintf(format, args...), v)
				}
			}
			must(src["version"] != "" && src["connector"] == "postgresql" && src["name"] == e.prefix && src["db"] == "postgres" && src["schema"] == "public",
				"source version %v connector %v name %v db %v schema %v", src["version"], src["connector"], src["name"], src["db"], src["schema"])
			must(src["ts_ms"] == f.CommitTime.UnixMilli() && opt(src["ts_us"]) == f.CommitTime.UnixMicro(),
				"source ts_ms %v ts_us %v, frame commit time %s", src["ts_ms"], opt(src["ts_us"]), f.CommitTime)
			now := opt(v["ts_ms"]).(int64)
			must(now >= f.CommitTime.UnixMilli() && now <= time.Now().UnixMilli(), "ts_ms %d not between the commit and now", now)
			must(opt(src["xmin"]) == nil, "xmin %v", opt(src["xmin"]))
			var seq []*string
			must(json.Unmarshal([]byte(opt(src["sequence"]).(string)), &seq) == nil && len(seq) == 2, "sequence %v", opt(src["sequence"]))
			lsn, _ := opt(src["lsn"]).(int64)
			if op == "r" {
				must(opt(src["snapshot"]) == "true", "snapshot %v", opt(src["snapshot"]))
				must(opt(v["transaction"]) == nil && opt(v["before"]) == nil && opt(v["after"]) != nil, "transaction/before/after")
				must(lsn == int64(f.EndLSN), "snapshot read lsn %d, want the consistent point %d (its frame's end LSN)", lsn, uint64(f.EndLSN))
				continue
			}
			must(opt(src["snapshot"]) == "false", "snapshot %v", opt(src["snapshot"]))
			must(opt(src["txId"]) == int64(f.Xid), "txId %v, frame xid %d", opt(src["txId"]), f.Xid)
			must(lsn > 0 && lsn < int64(f.EndLSN), "lsn %d outside the transaction (end %d)", lsn, uint64(f.EndLSN))
			must(seq[1] != nil && *seq[1] == strconv.FormatInt(lsn, 10), "sequence[1] %v, lsn %d", seq[1], lsn)
			// sequence[0] is the end of the last commit decoded before this
			// transaction: the previous one's, or before the first, the
			// slot's position the session started from.
			must(seq[0] != nil, "sequence[0] null")
			last, _ := strconv.ParseUint(*seq[0], 10, 64)
			must(lastEnd != 0 && last == lastEnd || lastEnd == 0 && last > 0 && last <= uint64(f.CommitLSN),
				"sequence[0] %d, the previous transaction ended at %d", last, lastEnd)
			perTable[table]++
			block, ok := opt(v["transaction"]).(map[string]any)
			must(ok, "no transaction block")
			// Positions count the tombstones; Debezium's orders count events.
			events := int64(0)
			for _, x := range tx[:n+1] {
				if x.value != nil {
					events++
				}
			}
			if op == "t" {
				events = 1 // one truncate event per table, on every partition
			}
			must(block["id"] == fmt.Sprintf("%d:%d", f.Xid, lsn), "transaction.id %v", block["id"])
			must(block["total_order"] == events, "total_order %v, want %d", block["total_order"], events)
			if op != "t" {
				must(block["data_collection_order"] == perTable[table], "data_collection_order %v, want %d", block["data_collection_order"], perTable[table])
			}
			before, _ := opt(v["before"]).(map[string]any)
			after, _ := opt(v["after"]).(map[string]any)
			keyID := r.key["id"]
			if table == "other" {
				keyID = r.key["k"]
			}
			switch op {
			case "c":
				must(before == nil && after != nil, "before %v after %v", before, after)
				must(opt(after["id"]) == keyID || opt(after["k"]) == keyID, "key %v, after %v", r.key, after)
			case "u":
				must(before == nil && opt(after["name"]) == "a2", "before %v after.name %v", before, opt(after["name"]))
				must(opt(after["big"]) == placeholder, "after.big %v, want the placeholder", opt(after["big"]))
				must(r.header(schemas.HeaderUnchangedToast) == `["big"]`, "header %s %q", schemas.HeaderUnchangedToast, r.header(schemas.HeaderUnchangedToast))
			case "d":
				must(after == nil && before != nil && opt(before["id"]) == keyID, "before %v after %v key %v", before, after, r.key)
			case "t":
				must(before == nil && after == nil && r.rec.Key == nil, "truncate with an image or a key")
			}
		}
		if frames[i].Snapshot == nil {
			lastEnd = uint64(f.EndLSN)
		}
	}
	// The key record is Debezium's <prefix>.<schema>.<table>.Key of the key columns.
	for _, tx := range txns {
		for _, r := range tx {
			if r.rec.Key == nil {
				continue
			}
			_, raw := dbzDecode(t, e, r.rec.Key)
			var sch map[string]any
			_ = json.Unmarshal([]byte(raw), &sch)
			ns := schemas.DebeziumNamespace(e.prefix, "public", strings.TrimPrefix(r.rec.Topic, e.prefix+".public."))
			if sch["name"] != "Key" || sch["namespace"] != ns || len(sch["fields"].([]any)) != 1 {
				t.Fatalf("key schema %s", raw)
			}
		}
	}

	// Tributary's own consumer replays the prefix whole.
	cons := harness.StartTributary(t, nil, "consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL,
		"--prefix", e.prefix, "--name", "replica", "--target", target.DSN, "--until-caught-up")
	select {
	case <-waitExit(cons):
	case <-time.After(2 * time.Minute):
		t.Fatalf("consumer --until-caught-up did not finish:\n%s", lastLines(cons.Output(), 15))
	}
	if _, err := cons.Exited(); err != nil {
		t.Fatalf("consumer: %v\n%s", err, lastLines(cons.Output(), 20))
	}
	for _, tbl := range []string{"items", "other"} {
		src, dst := tableDump(t, e.pg, tbl), tableDump(t, target, tbl)
		if fmt.Sprint(src) != fmt.Sprint(dst) {
			t.Fatalf("%s differs:\nsource %v\ntarget %v", tbl, src, dst)
		}
	}
	if out := prod.Output(); strings.Contains(out, "level=ERROR") {
		t.Fatalf("producer logged errors:\n%s", lastLines(out, 20))
	}
}

// TestProducerDebeziumSkipTruncate: with --envelope-skip-truncate a TRUNCATE
// writes nothing, as Debezium's default skipped.operations=t, and the
// transactions around it are framed as usual.
func TestProducerDebeziumSkipTruncate(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t, `CREATE TABLE other (k int PRIMARY KEY, v text)`, `CREATE PUBLICATION pub FOR TABLE other`)
	cfg := e.producerConfig(t)
	cfg.Envelope, cfg.EnvelopeSkipTruncate, cfg.HeartbeatInterval = schemas.EnvelopeDebezium, true, -1
	e.runProducer(t, cfg)
	e.pg.Exec(t, `INSERT INTO other VALUES (1, 'one')`)
	e.pg.Exec(t, `TRUNCATE other`)
	e.pg.Exec(t, `INSERT INTO other VALUES (2, 'two')`)
	e.waitFrameCount(t, 2)
	time.Sleep(time.Second) // a frame for the truncate would be there by now
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if n := len(harness.ReadTopic(ctx, t, e.kafka, schemas.TransactionsTopic(e.prefix))); n != 2 {
		t.Fatalf("%d frames, want 2 (the truncate writes none)", n)
	}
	var ops []string
	for _, r := range harness.ReadTopic(ctx, t, e.kafka, schemas.TopicName(e.prefix, "public", "other")) {
		v, _ := dbzDecode(t, e, r.Value)
		ops = append(ops, v["op"].(string))
	}
	if fmt.Sprint(ops) != "[c c]" {
		t.Fatalf("ops %v, want [c c]", ops)
	}
}

// TestProducerDebeziumOnlineSnapshot: rows read by an online snapshot
// (`tributary snapshot start`) are Debezium's incremental snapshot reads:
// source.snapshot "incremental", the watermark transaction's txId, no lsn,
// no transaction block; `tributary consumer` replays them, and a delete's
// tombstone, in both apply modes.
func TestProducerDebeziumOnlineSnapshot(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	const table = `CREATE TABLE other (k int PRIMARY KEY, v text)`
	const rows = `INSERT INTO other SELECT g, 'v' || g FROM generate_series(1, 5) g`
	e.pg.Exec(t, table, rows, `CREATE PUBLICATION pub FOR TABLE other`)
	target.Exec(t, table, rows) // the stream starts without a snapshot: the target starts equal
	e.pg.Exec(t, `UPDATE other SET v = 'before the snapshot' WHERE k = 2`)
	cfg := e.producerConfig(t)
	cfg.Envelope, cfg.Tombstones, cfg.HeartbeatInterval = schemas.EnvelopeDebezium, true, -1
	e.runProducer(t, cfg)
	e.pg.Exec(t, `UPDATE other SET v = 'changed' WHERE k = 1`, `DELETE FROM other WHERE k = 3`)
	req := harness.StartTributary(t, nil, "snapshot", "start", "--source", e.pg.DSN, "--slot", "slot", "--tables", "other")
	<-waitExit(req)
	if _, err := req.Exited(); err != nil {
		t.Fatalf("tributary snapshot start: %v\n%s", err, req.Output())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var reads []map[string]any
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		reads = reads[:0]
		for _, r := range harness.ReadTopic(ctx, t, e.kafka, schemas.TopicName(e.prefix, "public", "other")) {
			if r.Value == nil {
				continue // the delete's tombstone
			}
			if v, _ := dbzDecode(t, e, r.Value); v["op"] == "r" {
				reads = append(reads, v)
			}
		}
		if len(reads) >= 4 || time.Now().After(deadline) {
			break
		}
	}
	if len(reads) != 4 {
		t.Fatalf("%d snapshot reads, want 4", len(reads))
	}
	for _, v := range reads {
		src := v["source"].(map[string]any)
		var seq []*string
		_ = json.Unmarshal([]byte(opt(src["sequence"]).(string)), &seq)
		if opt(src["snapshot"]) != "incremental" || opt(src["txId"]) == nil || opt(src["lsn"]) != nil ||
			opt(v["transaction"]) != nil || len(seq) != 2 || seq[1] != nil || opt(v["after"]) == nil {
			t.Fatalf("online snapshot read: %v", v)
		}
	}
	// Both apply modes replay it, the tombstone after the delete skipped.
	perKey := harness.StartPostgres(t)
	perKey.Exec(t, table, rows)
	for _, c := range []struct {
		pg   *harness.Postgres
		mode string
	}{{target, "transactional"}, {perKey, "per-key"}} {
		cons := harness.StartTributary(t, nil, "consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL,
			"--prefix", e.prefix, "--name", "replica", "--target", c.pg.DSN, "--mode", c.mode, "--until-caught-up")
		select {
		case <-waitExit(cons):
		case <-time.After(2 * time.Minute):
			t.Fatalf("consumer --mode %s --until-caught-up did not finish:\n%s", c.mode, lastLines(cons.Output(), 15))
		}
		if _, err := cons.Exited(); err != nil {
			t.Fatalf("consumer --mode %s: %v\n%s", c.mode, err, lastLines(cons.Output(), 20))
		}
		if src, dst := tableDump(t, e.pg, "other"), tableDump(t, c.pg, "other"); fmt.Sprint(src) != fmt.Sprint(dst) {
			t.Fatalf("other differs (--mode %s):\nsource %v\ntarget %v", c.mode, src, dst)
		}
	}
}
