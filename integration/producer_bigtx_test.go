package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

// vmHWM reads the peak resident set size (VmHWM) of pid in bytes.
func vmHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("unexpected VmHWM line %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// peakRSS samples a process's VmHWM (the kernel's own high-water mark) every
// interval until stopped, so that a process that crashes or exits still
// leaves the figure read before it: VmHWM is gone with the process.
type peakRSS struct {
	pid  int
	mu   sync.Mutex
	peak int64 // 0 until a sample is read
	stop chan struct{}
	done chan struct{}
}

func watchPeakRSS(pid int, every time.Duration) *peakRSS {
	w := &peakRSS{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			w.sample()
			select {
			case <-w.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	return w
}

func (w *peakRSS) sample() {
	if v, err := vmHWM(w.pid); err == nil {
		w.mu.Lock()
		w.peak = max(w.peak, v)
		w.mu.Unlock()
	}
}

// Stop samples once more (the process may still run), stops the sampling
// and returns the peak in bytes: 0 when no sample could be read.
func (w *peakRSS) Stop() int64 {
	w.sample()
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak
}

// TestProducerLargeTransactionBoundedMemory streams one 1,000,000-row source
// transaction through `bin/tributary producer` as a subprocess and checks
// that its peak resident memory stays under 150 MB (G6), and that Kafka holds
// exactly one frame counting 1,000,000 events whose per-partition counts are
// the committed records of each partition, with every id once. The embedded
// broker runs in the test process, so the subprocess's memory is the
// producer's alone. The producer runs under a soft Go memory limit, as in
// catchUpPeakRSS: the peak then follows the memory it holds, not how far
// the garbage collector lags on a loaded machine.
func TestProducerLargeTransactionBoundedMemory(t *testing.T) {
	const rows = 1_000_000
	const limit = 150 << 20
	harness.Binary(t) // fails with "run make build" when bin/tributary is missing
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE bulk (id bigint PRIMARY KEY, n int NOT NULL, pad text NOT NULL)`,
		`CREATE PUBLICATION pub FOR TABLE bulk`)
	proc := harness.StartTributary(t, []string{"GOMEMLIMIT=100MiB"}, "producer",
		"--source", e.pg.DSN, "--publication", "pub", "--slot", "slot",
		"--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL, "--prefix", e.prefix,
		"--snapshot", "never", "--log-format", "json", "--heartbeat-interval", "1s")
	e.waitSlotActive(t, "slot")
	pid := proc.Cmd.Process.Pid
	base, err := vmHWM(pid)
	if err != nil {
		t.Fatal(err)
	}
	rss := watchPeakRSS(pid, 200*time.Millisecond)

	start := time.Now()
	// ~100-byte rows: 8 + 4 + 88 bytes of text.
	e.pg.Exec(t, fmt.Sprintf(`INSERT INTO bulk SELECT g, g %% 1000, rpad(md5(g::text), 88, 'x') FROM generate_series(1, %d) g`, rows))
	inserted := time.Since(start)

	// Wait for the frame: poll the transactions topic's end offset.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	adm := e.kafka.Admin(t)
	txTopic := schemas.TransactionsTopic(e.prefix)
	for {
		ends, err := adm.ListEndOffsets(ctx, txTopic)
		if err == nil {
			// The producer's heartbeats have frames too: wait for the data one.
			if o, ok := ends.Lookup(txTopic, 0); ok && o.Err == nil && o.Offset > 0 && len(bigtxDataFrames(t, e, txTopic)) > 0 {
				break
			}
		}
		if exited, werr := proc.Exited(); exited {
			t.Fatalf("producer exited (%v) before the frame arrived:\n%s", werr, proc.Output())
		}
		if ctx.Err() != nil {
			t.Fatalf("no frame after 10 minutes; producer output:\n%s", proc.Output())
		}
		time.Sleep(500 * time.Millisecond)
	}
	elapsed := time.Since(start)
	peak := rss.Stop()
	if err := proc.Stop(t, time.Minute); err != nil {
		t.Errorf("producer exit after SIGTERM: %v\n%s", err, proc.Output())
	}
	t.Logf("1,000,000-row transaction: insert %s, committed frame after %s (%.0f rows/s end to end); producer VmHWM %.1f MB (%.1f MB when idle)",
		inserted.Round(time.Millisecond), elapsed.Round(time.Millisecond), rows/elapsed.Seconds(), float64(peak)/(1<<20), float64(base)/(1<<20))
	if peak >= limit {
		t.Errorf("producer peak RSS (VmHWM) %.1f MB, want < 150 MB (G6: memory independent of transaction size)", float64(peak)/(1<<20))
	}

	// The frames: exactly one, counting every row, over the data topic's partitions.
	frames := bigtxDataFrames(t, e, txTopic)
	if len(frames) != 1 {
		t.Fatalf("%d frames besides heartbeats, want 1", len(frames))
	}
	f := frames[0]
	if f.Events != rows {
		t.Fatalf("frame event_count %d, want %d", f.Events, rows)
	}
	topic := schemas.TopicName(e.prefix, "public", "bulk")
	counts := map[int32]int64{}
	var sum int64
	for _, p := range f.Partitions {
		if p.Topic != topic {
			t.Fatalf("frame counts records on %s", p.Topic)
		}
		counts[p.Partition] = p.Count
		sum += p.Count
	}
	if sum != rows || len(counts) != 3 {
		t.Fatalf("frame partition counts %v sum to %d over %d partitions, want %d over 3", f.Partitions, sum, len(counts), rows)
	}

	// The data: every committed record of each partition belongs to this
	// frame, the counts match, and each id arrives once (keys decoded; the
	// first and last value of each partition decoded in full).
	seen := make([]bool, rows+1)
	got := map[int32]int64{}
	commit := strconv.FormatUint(uint64(f.CommitLSN), 10)
	first := map[int32]bool{}
	var last = map[int32]*kgo.Record{}
	dups := 0
	bigtxRead(t, e, topic, func(r *kgo.Record) {
		got[r.Partition]++
		var lsn string
		for _, h := range r.Headers {
			if h.Key == schemas.HeaderCommitLSN {
				lsn = string(h.Value)
			}
		}
		if lsn != commit {
			t.Fatalf("%s[%d]@%d: commit LSN header %q, the frame's is %s", r.Topic, r.Partition, r.Offset, lsn, commit)
		}
		key, ok := bigtxDecode(t, e, r.Key).(map[string]any)
		if !ok {
			t.Fatalf("%s[%d]@%d: key is not a record", r.Topic, r.Partition, r.Offset)
		}
		id, ok := schemas.UnwrapUnion(key["id"]).(int64) // bigint: [long, text branch]
		if !ok || id < 1 || id > rows {
			t.Fatalf("%s[%d]@%d: key id %v", r.Topic, r.Partition, r.Offset, key["id"])
		}
		if seen[id] {
			dups++
		}
		seen[id] = true
		if !first[r.Partition] {
			first[r.Partition] = true
			bigtxCheckValue(t, e, r, id)
		}
		last[r.Partition] = r
	})
	for _, r := range last {
		k := bigtxDecode(t, e, r.Key).(map[string]any)
		bigtxCheckValue(t, e, r, schemas.UnwrapUnion(k["id"]).(int64))
	}
	missing := 0
	for id := 1; id <= rows; id++ {
		if !seen[id] {
			missing++
		}
	}
	for p, n := range counts {
		if got[p] != n {
			t.Errorf("partition %d: frame counts %d records, the partition holds %d committed", p, n, got[p])
		}
	}
	if missing > 0 || dups > 0 {
		t.Fatalf("%d ids missing, %d duplicated", missing, dups)
	}
}

// bigtxCheckValue decodes one envelope in full and checks it is the insert of id.
func bigtxCheckValue(t *testing.T, e *env, r *kgo.Record, id int64) {
	t.Helper()
	v, ok := bigtxDecode(t, e, r.Value).(map[string]any)
	if !ok {
		t.Fatalf("%s[%d]@%d: value is not a record", r.Topic, r.Partition, r.Offset)
	}
	after, _ := schemas.UnwrapUnion(v["after"]).(map[string]any)
	if v["op"] != "c" || after == nil || schemas.UnwrapUnion(after["id"]) != id ||
		schemas.UnwrapUnion(after["n"]) != int32(id%1000) || len(schemas.UnwrapUnion(after["pad"]).(string)) != 88 {
		t.Fatalf("%s[%d]@%d: envelope %v, want the insert of id %d", r.Topic, r.Partition, r.Offset, v, id)
	}
}

// bigtxDecode decodes a Confluent wire-format Avro payload through the registry.
func bigtxDecode(t *testing.T, e *env, b []byte) any {
	t.Helper()
	id, body, err := schemas.SplitWire(b)
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.reg.Codec(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	v, rest, err := c.NativeFromBinary(body)
	if err != nil || len(rest) != 0 {
		t.Fatalf("decode: %v (%d bytes left)", err, len(rest))
	}
	return v
}

// bigtxRead reads every committed record of topic (read_committed) up to its
// current end offsets without keeping them when fn is set; without fn it
// returns them. Control records are skipped.
// bigtxDataFrames are the frames of the transactions topic that are not
// heartbeats.
func bigtxDataFrames(t *testing.T, e *env, txTopic string) []schemas.Frame {
	t.Helper()
	var out []schemas.Frame
	for _, r := range bigtxRead(t, e, txTopic, nil) {
		f, err := schemas.FrameFromNative(bigtxDecode(t, e, r.Value))
		if err != nil {
			t.Fatal(err)
		}
		if !f.Heartbeat() {
			out = append(out, f)
		}
	}
	return out
}

func bigtxRead(t *testing.T, e *env, topic string, fn func(*kgo.Record)) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ends, err := e.kafka.Admin(t).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	cl := e.kafka.Client(t, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v (still waiting for %v)", topic, ctx.Err(), want)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s[%d]: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				if fn != nil {
					fn(r)
				} else {
					out = append(out, r)
				}
			}
			if end, ok := want[r.Partition]; ok && r.Offset >= end-1 {
				delete(want, r.Partition)
			}
		})
	}
	return out
}
