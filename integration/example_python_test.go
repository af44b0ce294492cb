package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPythonExampleWholeTransactions runs examples/python/transactions.py,
// the reassembly that docs/CONSUMING.md describes, with the pinned
// confluent-kafka-python against the real producer: transactions that each
// touch two tables over three partitions, one of 4,000 rows. The reader is
// stopped after 20 transactions and restarted from its checkpoint file.
// Every transaction must come out whole (exactly its rows, no other
// transaction's, in position order, with its own commit LSN), each exactly
// once across the restart, in commit order.
func TestPythonExampleWholeTransactions(t *testing.T) {
	root := tmRoot(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatalf("the Python example needs python3 with pip (.ci/run installs python3-pip): %v", err)
	}
	site, err := tmInstallPython(root)
	if err != nil {
		t.Fatalf("install confluent-kafka-python: %v", err)
	}
	e := newLedgerEnv(t, -1) // no heartbeats: the second run ends when the topic is idle

	// Transaction k makes 1 + k%4 transfers (1,000 for k = 30): two acct
	// updates and two ledger rows each.
	const txns = 60
	want := map[int]int{}
	src := e.pg.Conn(t)
	for k := 1; k <= txns; k++ {
		transfers := 1 + k%4
		if k == 30 {
			transfers = 1000
		}
		tx, err := src.Begin(context.Background())
		must(t, err)
		_, err = tx.Exec(context.Background(), `
			WITH moves AS (SELECT i, 1 + ($1 + i) % 50 AS src, 1 + ($1 + i + 7) % 50 AS dst FROM generate_series(0, $2 - 1) i),
			     debit AS (UPDATE acct a SET balance = balance - m.n FROM (SELECT src, count(*) n FROM moves GROUP BY src) m WHERE a.id = m.src)
			INSERT INTO ledger (txn, acct, amount) SELECT $1, src, -1 FROM moves UNION ALL SELECT $1, dst, 1 FROM moves`, k, transfers)
		must(t, err)
		_, err = tx.Exec(context.Background(), `
			UPDATE acct a SET balance = balance + m.n FROM (SELECT 1 + ($1 + i + 7) % 50 AS dst, count(*) n FROM generate_series(0, $2 - 1) i GROUP BY 1) m
			WHERE a.id = m.dst`, k, transfers)
		must(t, err)
		must(t, tx.Commit(context.Background()))
		want[k] = 2 * transfers // ledger rows; acct rows vary with the distinct accounts
	}
	e.waitFrameCount(t, txns)

	checkpoint := filepath.Join(t.TempDir(), "checkpoint.json")
	run := func(extra ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		args := append([]string{filepath.Join(root, "examples", "python", "transactions.py"),
			"--brokers", strings.Join(e.kafka.Brokers, ","), "--registry", e.kafka.RegistryURL,
			"--prefix", e.prefix, "--checkpoint", checkpoint}, extra...)
		c := exec.CommandContext(ctx, "python3", args...)
		c.Env = append(c.Environ(), "PYTHONPATH="+site)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			t.Fatalf("transactions.py %v: %v\n%s", extra, err, stderr.Bytes())
		}
		return out
	}
	first := run("--count", "20")
	second := run("--idle-exit", "8")

	type line struct {
		Begin *struct {
			Xid       uint32 `json:"xid"`
			CommitLSN uint64 `json:"commit_lsn"`
			Events    int    `json:"events"`
		} `json:"begin"`
		Event *struct {
			Topic     string `json:"topic"`
			Partition int32  `json:"partition"`
			Offset    int64  `json:"offset"`
			Position  int64  `json:"position"`
			Value     struct {
				After map[string]any `json:"after"`
			} `json:"value"`
		} `json:"event"`
		Commit *struct {
			CommitLSN uint64 `json:"commit_lsn"`
		} `json:"commit"`
	}
	seen := map[int]bool{}
	var lastLSN uint64
	check := func(name string, out []byte) (printed int) {
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var (
			open      bool
			lsn       uint64
			events    int
			framed    int
			txn       = -1
			ledger    int
			lastPos   int64
			eventLine int
		)
		for n := 1; sc.Scan(); n++ {
			var l line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("%s run, line %d: %v: %s", name, n, err, sc.Bytes())
			}
			switch {
			case l.Begin != nil:
				if open {
					t.Fatalf("%s run, line %d: begin of %d inside the transaction of commit %d", name, n, l.Begin.CommitLSN, lsn)
				}
				if l.Begin.CommitLSN <= lastLSN {
					t.Errorf("%s run, line %d: commit LSN %d after %d", name, n, l.Begin.CommitLSN, lastLSN)
				}
				open, lsn, framed, events, txn, ledger, lastPos = true, l.Begin.CommitLSN, l.Begin.Events, 0, -1, 0, -1
				lastLSN = lsn
			case l.Event != nil:
				if !open {
					t.Fatalf("%s run, line %d: an event outside a transaction", name, n)
				}
				ev := l.Event
				if ev.Position <= lastPos {
					t.Errorf("%s run, line %d: position %d after %d in commit %d", name, n, ev.Position, lastPos, lsn)
				}
				lastPos, eventLine = ev.Position, n
				events++
				if !strings.HasSuffix(ev.Topic, ".public.ledger") {
					continue
				}
				k := int(ev.Value.After["txn"].(float64))
				if txn != -1 && txn != k {
					t.Errorf("%s run, line %d: ledger rows of transactions %d and %d under commit %d", name, n, txn, k, lsn)
				}
				txn = k
				ledger++
			case l.Commit != nil:
				if !open || l.Commit.CommitLSN != lsn {
					t.Fatalf("%s run, line %d: commit %d does not close the open transaction (%d)", name, n, l.Commit.CommitLSN, lsn)
				}
				open = false
				printed++
				if events != framed {
					t.Errorf("%s run: commit %d has %d events, its frame says %d", name, lsn, events, framed)
				}
				if txn == -1 {
					continue // a transaction of the producer's own messages only
				}
				if ledger != want[txn] {
					t.Errorf("%s run: transaction %d (commit %d) has %d ledger rows, want %d", name, txn, lsn, ledger, want[txn])
				}
				if seen[txn] {
					t.Errorf("%s run: transaction %d (commit %d) printed again", name, txn, lsn)
				}
				seen[txn] = true
			}
		}
		must(t, sc.Err())
		if open {
			t.Fatalf("%s run ended inside the transaction of commit %d (last event on line %d)", name, lsn, eventLine)
		}
		return printed
	}
	if n := check("first", first); n != 20 {
		t.Errorf("the first run printed %d transactions, want 20 (--count)", n)
	}
	resumedAt := len(seen)
	n := check("second", second)
	for k := 1; k <= txns; k++ {
		if !seen[k] {
			t.Errorf("transaction %d never printed", k)
		}
	}
	t.Logf("%d transactions: %d before the restart, %d printed after it (%d with ledger rows)", txns, resumedAt, n, len(seen)-resumedAt)
}
