package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

const latDDL = `(id bigint PRIMARY KEY, src_ts timestamptz NOT NULL DEFAULT clock_timestamp(), payload text NOT NULL)`

// latTarget creates the target table and an ENABLE ALWAYS trigger that
// records the apply time (both apply paths run as session_replication_role = replica).
func latTarget(ctx context.Context, p *PG, table string) error {
	return p.Exec(ctx,
		`DROP TABLE IF EXISTS `+table+`, `+table+`_log`,
		`CREATE TABLE `+table+` `+latDDL,
		`CREATE TABLE `+table+`_log (seq bigserial PRIMARY KEY, id bigint NOT NULL, applied timestamptz NOT NULL DEFAULT clock_timestamp())`,
		`CREATE OR REPLACE FUNCTION `+table+`_trg() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO public.`+table+`_log(id) VALUES (NEW.id); RETURN NULL; END $$`,
		`CREATE TRIGGER `+table+`_trg AFTER INSERT ON `+table+` FOR EACH ROW EXECUTE FUNCTION `+table+`_trg()`,
		`ALTER TABLE `+table+` ENABLE ALWAYS TRIGGER `+table+`_trg`)
}

func latSource(ctx context.Context, p *PG, table, pub string) error {
	return p.Exec(ctx,
		`DROP PUBLICATION IF EXISTS `+pub, `DROP TABLE IF EXISTS `+table,
		`CREATE TABLE `+table+` `+latDDL,
		`CREATE PUBLICATION `+pub+` FOR TABLE `+table)
}

func (b *Bench) latencyTributary(ctx context.Context, rep int, tag, prefix string, txps, rows int) *Result {
	r := newResult(rep, latWorkload(txps, rows), "tributary (producer + consumer, both running)", 0)
	table, pub, slot := "lat_t_"+tag, "pub_lat_t_"+tag, "lat_t_"+tag
	if err := latSource(ctx, b.src, table, pub); err != nil {
		return r.fail("%v", err)
	}
	if err := latTarget(ctx, b.tgt, table); err != nil {
		return r.fail("%v", err)
	}
	if err := b.src.Exec(ctx, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'pgoutput')`, slot)); err != nil {
		return r.fail("%v", err)
	}
	defer b.dropSlots(context.Background(), slot)
	ptag := fmt.Sprintf("lat-%s-%d", tag, rep)
	pargs := append(b.producerArgs(prefix, slot, pub, "never"), b.producerExtra(ptag)...)
	cargs := []string{b.bin, "consumer", "--brokers", b.kafka.Brokers, "--registry", b.reg, "--prefix", prefix,
		"--name", "lat_" + tag, "--target", withParam(b.tgt.DSN, "application_name", latAppName), "--create-tables", "--log-format", "json"}
	cargs = append(cargs, b.consumerExtra(ptag)...)
	r.Cmd = b.tributaryCmd(pargs) + "\n" + b.tributaryCmd(cargs)
	pp, err := startProc("producer", b.root, b.logPath("producer-lat-"+tag), b.tributaryEnv(), pargs...)
	if err != nil {
		return r.fail("%v", err)
	}
	defer pp.Stop()
	// The consumer needs the topics; the first row creates them.
	if err := b.src.Exec(ctx, `INSERT INTO `+table+`(id, payload) VALUES (0, 'warm-up')`); err != nil {
		return r.fail("%v", err)
	}
	if err := pollUntil(60*time.Second, 200*time.Millisecond, func() (bool, error) {
		_, n, err := b.kafka.EndOffsets(ctx, prefix+".transactions", true)
		return err == nil && n > 0, nil
	}); err != nil {
		return r.fail("producer never wrote the warm-up row: %v\n%s", err, pp.Tail(15))
	}
	cp, err := startProc("consumer", b.root, b.logPath("consumer-lat-"+tag), b.tributaryEnv(), cargs...)
	if err != nil {
		return r.fail("%v", err)
	}
	defer cp.Stop()
	frames, err := b.watchFrames(ctx, prefix+".transactions")
	if err != nil {
		return r.fail("%v", err)
	}
	cpu := &cpuMeter{broker: true, parts: map[string]func() float64{
		partProducer: func() float64 { return treeCPU(pp.Pid()) },
		partProdWS:   func() float64 { return procCPU(b.slotPID(ctx, slot)) },
		partConsumer: func() float64 { return treeCPU(cp.Pid()) },
		partBackend:  func() float64 { return pidsCPU(backends(ctx, b.tgt, latAppName)) },
	}}
	r = b.latencyRun(ctx, r, table, b.tgt, txps, rows, cpu, func() string {
		if pp.Exited() {
			return "producer exited:\n" + pp.Tail(15)
		}
		if cp.Exited() {
			return "consumer exited:\n" + cp.Tail(15)
		}
		return ""
	})
	var k []float64
	for _, f := range frames.Stop() {
		if !f.commit.Before(r.loadStart) {
			k = append(k, f.lat)
		}
	}
	sort.Float64s(k)
	r.KP50, r.KP99, r.KMax = percentile(k, 0.50), percentile(k, 0.99), percentile(k, 1)
	return r
}

type frameSeen struct {
	commit time.Time
	lat    float64 // ms from the source commit to readable in Kafka
}

// frameWatch is a running watchFrames reader.
type frameWatch struct {
	n    atomic.Int64 // frames noted so far
	stop func() []frameSeen
}

// Seen reports how many frames the watcher has noted so far.
func (w *frameWatch) Seen() int { return int(w.n.Load()) }

// Stop ends the watch and returns what it saw.
func (w *frameWatch) Stop() []frameSeen { return w.stop() }

// watchFrames follows the transactions topic read_committed from its end
// (txlog's Follow) and notes, for each data frame, the time from its source
// commit (the frame's CommitTime) to the moment this reader decoded it.
// Snapshot chunks and heartbeats (no events) are not noted.
func (b *Bench) watchFrames(ctx context.Context, topic string) (*frameWatch, error) {
	fr, done, err := b.kafka.Frames(topic, kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		return nil, err
	}
	bounds, err := fr.Bounds(ctx)
	if err != nil {
		done()
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	out := make(chan []frameSeen)
	w := &frameWatch{}
	go func() {
		defer done()
		var seen []frameSeen
		err := fr.Follow(wctx, bounds.End, func(_ int64, f schemas.Frame) error {
			if f.Snapshot == nil && f.Events > 0 {
				seen = append(seen, frameSeen{commit: f.CommitTime, lat: float64(time.Since(f.CommitTime).Microseconds()) / 1000})
				w.n.Add(1)
			}
			return nil
		})
		if wctx.Err() == nil {
			logf("watching %s stopped early, latencies to Kafka are partial: %v", topic, err)
		}
		out <- seen
	}()
	w.stop = func() []frameSeen { cancel(); return <-out }
	return w, nil
}

func (b *Bench) latencyNative(ctx context.Context, rep int, tag string, txps, rows int) *Result {
	r := newResult(rep, latWorkload(txps, rows), peerNative, 0)
	table, pub, sub := "lat_n_"+tag, "pub_lat_n_"+tag, "lat_n_"+tag
	if err := latSource(ctx, b.src, table, pub); err != nil {
		return r.fail("%v", err)
	}
	if err := latTarget(ctx, b.nat, table); err != nil {
		return r.fail("%v", err)
	}
	create := fmt.Sprintf(`CREATE SUBSCRIPTION %s CONNECTION '%s' PUBLICATION %s WITH (copy_data = false)`, sub, b.src.ConnString(), pub)
	r.Cmd = create
	if err := b.nat.Exec(ctx, create); err != nil {
		return r.fail("%v", err)
	}
	defer b.nat.Exec(context.Background(), `DROP SUBSCRIPTION IF EXISTS `+sub)
	if err := b.src.Exec(ctx, `INSERT INTO `+table+`(id, payload) VALUES (0, 'warm-up')`); err != nil {
		return r.fail("%v", err)
	}
	cpu := &cpuMeter{parts: map[string]func() float64{
		partNativeWS: func() float64 { return procCPU(b.slotPID(ctx, sub)) },
		partApply:    func() float64 { return procCPU(b.applyPID(ctx, sub)) },
	}}
	return b.latencyRun(ctx, r, table, b.nat, txps, rows, cpu, func() string { return "" })
}

// latAppName is the application_name of the latency consumer's target
// sessions, by which its backends are found.
const latAppName = "tribench_lat"

// cpuMeter reads the CPU seconds each component of a latency peer has used
// so far, so that the steady load's window can be charged to each: the CPU
// a lower latency costs. A reading of -1 means unknown.
type cpuMeter struct {
	parts  map[string]func() float64
	broker bool // the peer uses the broker: charge its CPU too
}

// cpuMark is a cpuMeter's reading at one moment.
type cpuMark struct {
	parts  map[string]float64
	broker brokerMark
}

// markCPU reads m's components, and the broker if m uses it, now.
func (b *Bench) markCPU(m *cpuMeter) cpuMark {
	c := cpuMark{parts: map[string]float64{}}
	for k, f := range m.parts {
		c.parts[k] = f()
	}
	if m.broker {
		c.broker = b.kafka.mark()
	}
	return c
}

// cpuSince is the CPU each of m's components used from c to now; a component
// with an unknown reading at either end is left out.
func (b *Bench) cpuSince(m *cpuMeter, c cpuMark) map[string]float64 {
	now := b.markCPU(m)
	out := map[string]float64{}
	for k, v := range now.parts {
		if v0 := c.parts[k]; v >= 0 && v0 >= 0 {
			out[k] = v - v0
		}
	}
	if m.broker {
		b.kafka.addBrokerCPU(out, c.broker)
	}
	return out
}

// pidsCPU is the CPU seconds of the processes pids together, -1 when none
// can be read.
func pidsCPU(pids []int) float64 {
	sum, any := 0.0, false
	for _, pid := range pids {
		if c := procCPU(pid); c >= 0 {
			sum, any = sum+c, true
		}
	}
	if !any {
		return -1
	}
	return sum
}

// latencyRun waits for the warm-up row, runs the paced load, waits until the
// target holds every row, then joins source and target commit timestamps.
// The CPU each of cpu's components used from the load's start until the
// target held every row goes into the result's Parts.
func (b *Bench) latencyRun(ctx context.Context, r *Result, table string, tgt *PG, txps, rows int, cpu *cpuMeter, dead func() string) *Result {
	if err := pollUntil(120*time.Second, 200*time.Millisecond, func() (bool, error) {
		if d := dead(); d != "" {
			return false, fmt.Errorf("%s", d)
		}
		v, err := tgt.QueryVal(ctx, `SELECT count(*)::text FROM `+table+`_log`)
		return err == nil && v == "1", nil
	}); err != nil {
		return r.fail("warm-up row never applied: %v", err)
	}
	time.Sleep(time.Second)
	r.Load0 = loadavg()
	r.loadStart = time.Now()
	cpu0 := b.markCPU(cpu)
	seen, stopPoll, err := pollVisible(ctx, tgt, table)
	if err != nil {
		return r.fail("%v", err)
	}
	secs := b.cfg.LatSecs
	sent, elapsed, err := paced(ctx, b.src, table, txps, rows, time.Duration(secs)*time.Second)
	if err != nil {
		return r.fail("load: %v", err)
	}
	r.Rate = float64(sent) / elapsed.Seconds()
	want := strconv.Itoa(sent*rows + 1)
	if err := pollUntil(180*time.Second, 200*time.Millisecond, func() (bool, error) {
		if d := dead(); d != "" {
			return false, fmt.Errorf("%s", d)
		}
		v, err := tgt.QueryVal(ctx, `SELECT count(*)::text FROM `+table+`_log`)
		return err == nil && v == want, nil
	}); err != nil {
		return r.fail("target never caught up to %s rows: %v", want, err)
	}
	r.Parts = b.cpuSince(cpu, cpu0)
	r.Load1 = loadavg()
	visible := stopPoll()
	_ = seen
	r.Rows = int64(sent * rows)
	src, err := epochs(ctx, b.src, `SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8, 0::float8 FROM `+table+` WHERE id > 0`)
	if err != nil {
		return r.fail("%v", err)
	}
	dst, err := epochs(ctx, tgt, `SELECT id, 0::float8, extract(epoch FROM applied)::float8 FROM `+table+`_log WHERE id > 0`)
	if err != nil {
		return r.fail("%v", err)
	}
	var commit, apply []float64
	for id, d := range dst {
		s, ok := src[id]
		if !ok {
			continue
		}
		if v, ok := visible[id]; ok {
			commit = append(commit, (v-s[0])*1000)
		}
		apply = append(apply, (d[1]-s[0])*1000)
	}
	sort.Float64s(commit)
	sort.Float64s(apply)
	r.Samples = len(commit)
	r.P50, r.P99, r.Max = percentile(commit, 0.50), percentile(commit, 0.99), percentile(commit, 1)
	r.AP50, r.AP99 = percentile(apply, 0.50), percentile(apply, 0.99)
	r.Secs = elapsed.Seconds()
	r.Note = fmt.Sprintf("%d tx of %d rows in %.1fs with 8 source connections (synchronous_commit on)", sent, rows, elapsed.Seconds())
	return r
}

// pollVisible reads the target's apply log every 2 ms and notes when each row
// first became visible (committed) there. The apply log's seq follows the
// single apply stream's order, so "seq > last" never misses a row.
func pollVisible(ctx context.Context, tgt *PG, table string) (chan struct{}, func() map[int64]float64, error) {
	c, err := tgt.Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	stop := make(chan struct{})
	done := make(chan map[int64]float64)
	go func() {
		defer c.Close(context.Background())
		seen := map[int64]float64{}
		var last int64
		q := `SELECT seq, id FROM public.` + table + `_log WHERE seq > $1 ORDER BY seq`
		for {
			select {
			case <-stop:
				done <- seen
				return
			default:
			}
			rows, err := c.Query(ctx, q, last)
			if err == nil {
				now := float64(time.Now().UnixNano()) / 1e9
				for rows.Next() {
					var seq, id int64
					if rows.Scan(&seq, &id) == nil {
						seen[id] = now
						last = seq
					}
				}
				rows.Close()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return stop, func() map[int64]float64 { close(stop); return <-done }, nil
}

func epochs(ctx context.Context, p *PG, sql string) (map[int64][2]float64, error) {
	c, err := p.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	out := map[int64][2]float64{}
	for rows.Next() {
		var id int64
		var a, b float64
		if err := rows.Scan(&id, &a, &b); err != nil {
			return nil, err
		}
		out[id] = [2]float64{a, b}
	}
	return out, rows.Err()
}

// paced commits txps transactions a second of `rows` rows each, for d, on 8
// connections; it returns the transactions committed and the time taken.
func paced(ctx context.Context, p *PG, table string, txps, rows int, d time.Duration) (int, time.Duration, error) {
	const workers = 8
	tokens := make(chan int64, txps) // at most one second of backlog
	var nextID atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	var sent atomic.Int64
	for w := 0; w < workers; w++ {
		c, err := p.Conn(ctx)
		if err != nil {
			return 0, 0, err
		}
		wg.Add(1)
		go func(c *pgx.Conn) {
			defer wg.Done()
			defer c.Close(context.Background())
			q := fmt.Sprintf(`INSERT INTO %s(id, payload) SELECT g, repeat('x', 180) FROM generate_series($1::bigint, $2::bigint) g`, table)
			for range tokens {
				lo := nextID.Add(int64(rows)) - int64(rows) + 1
				if _, err := c.Exec(ctx, q, lo, lo+int64(rows)-1); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				sent.Add(1)
			}
		}(c)
	}
	t0 := time.Now()
	var issued int64
	for {
		el := time.Since(t0)
		if el >= d || ctx.Err() != nil {
			break
		}
		due := int64(el.Seconds() * float64(txps))
		for ; issued < due; issued++ {
			select {
			case tokens <- issued:
			default: // workers cannot keep up: skip the token, the achieved rate shows it
			}
		}
		time.Sleep(500 * time.Microsecond)
	}
	close(tokens)
	wg.Wait()
	return int(sent.Load()), time.Since(t0), firstErr
}
