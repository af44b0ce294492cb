package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

// stallReport describes where a pipeline that stopped delivering stands, so
// that a failed probe says which part stalled: the slot (did the producer
// read and confirm?), the transactions topic (is its last stable offset held
// back by an open Kafka transaction, and whose?), and the producer's
// transactional ID as its coordinator sees it. Each part that cannot be read
// says why; the report itself never fails the test.
func (c *chaos) stallReport() string {
	var b strings.Builder
	var slot, wal string
	if err := c.queryRow(c.src.DSN, `SELECT coalesce(confirmed_flush_lsn::text, '-') || ' active=' || active::text, pg_current_wal_lsn()::text
		FROM pg_replication_slots WHERE slot_name = 'slot'`, nil, &slot, &wal); err != nil {
		fmt.Fprintf(&b, "slot: %v; ", err)
	} else {
		fmt.Fprintf(&b, "slot confirmed %s, source WAL at %s; ", slot, wal)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(c.kafka.Opts()...)
	if err != nil {
		return b.String() + fmt.Sprintf("kafka client: %v", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topic := schemas.TransactionsTopic(c.prefix)
	ends, eerr := adm.ListEndOffsets(ctx, topic)
	stable, serr := adm.ListCommittedOffsets(ctx, topic)
	if e, ok := ends.Lookup(topic, 0); eerr == nil && ok && e.Err == nil {
		fmt.Fprintf(&b, "%s end offset %d", topic, e.Offset)
	} else {
		fmt.Fprintf(&b, "%s end offset: %v %v", topic, eerr, e.Err)
	}
	if s, ok := stable.Lookup(topic, 0); serr == nil && ok && s.Err == nil {
		fmt.Fprintf(&b, ", last stable offset %d; ", s.Offset)
	} else {
		fmt.Fprintf(&b, ", last stable offset: %v %v; ", serr, s.Err)
	}
	// Producers with a transaction open on the transactions topic: one that
	// stays open holds every read_committed reader back.
	var ts kadm.TopicsSet
	ts.Add(topic, 0)
	if ps, err := adm.DescribeProducers(ctx, ts); err != nil {
		fmt.Fprintf(&b, "producers: %v; ", err)
	} else {
		ps.EachProducer(func(p kadm.DescribedProducer) {
			if p.CurrentTxnStartOffset >= 0 {
				fmt.Fprintf(&b, "open transaction of producer id %d epoch %d from offset %d (last write %s); ",
					p.ProducerID, p.ProducerEpoch, p.CurrentTxnStartOffset, time.UnixMilli(p.LastTimestamp).UTC().Format("15:04:05.000"))
			}
		})
	}
	txnID := "tributary-" + c.prefix + "-slot"
	if ds, err := adm.DescribeTransactions(ctx, txnID); err != nil {
		fmt.Fprintf(&b, "transactional id %s: %v", txnID, err)
	} else if d, ok := ds[txnID]; ok {
		fmt.Fprintf(&b, "transactional id %s: state %s, producer id %d epoch %d, started %s, err %v",
			txnID, d.State, d.ProducerID, d.ProducerEpoch, time.UnixMilli(d.StartTimestamp).UTC().Format("15:04:05.000"), d.Err)
	}
	if c.real != nil {
		fmt.Fprintf(&b, "; broker log: %s", lastLines(tailFile(filepath.Join(c.real.Dir, "run", "kafka.log"), 64<<10), 15))
	}
	return b.String()
}

// tailFile returns at most the last n bytes of a file, or why it cannot.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(st.Size()-n, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return err.Error()
	}
	return string(buf)
}
