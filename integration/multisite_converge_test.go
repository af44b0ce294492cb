package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// The randomized convergence test (docs/MULTISITE.md, "Convergence"): three
// sites, in a full mesh and as a hub (B) with two spokes; every routine
// that converges whatever the workload on a column group of one table, and
// site-priority and earliest under the workload they need; seeded random
// workloads; kills of producers and consumers; and, for the whole test, a
// per-key and a transactional consumer of one of the prefixes.
//
// TRIBUTARY_MULTISITE_LONG=1 runs the long version (make chaos);
// TRIBUTARY_MULTISITE_SEED=n replays a seed (the test logs the one it uses).

// convPlan is how hard a run pushes.
type convPlan struct {
	keys, rounds, txns int // rows; workload rounds; transactions each site holds open per round
	concurrentEvery    int // every so many rounds, a site-priority and earliest round
}

func convCurrentPlan() convPlan {
	if os.Getenv("TRIBUTARY_MULTISITE_LONG") != "" {
		return convPlan{keys: 40, rounds: 24, txns: 5, concurrentEvery: 4}
	}
	return convPlan{keys: 10, rounds: 4, txns: 3, concurrentEvery: 3}
}

// convYAML gives each routine a column group of conv. C ranks first, so
// that ties do not simply follow names.
const convYAML = `priority: [C, A, B]
tables:
  public.conv:
    method: latest
    groups:
      lt2: {columns: [lt2, lt2_n], method: latest}
      ts: {columns: [ts_v, ts_at], method: latest, timestamp_column: ts_at}
      ad: {columns: [ad], method: additive}
      cu:
        columns: [cu]
        method: custom
        expr: '{"cu": local.cu + (remote_after.cu - remote_before.cu)}'
      mn: {columns: [mn], method: minimum}
      mx: {columns: [mx], method: maximum}
      sp: {columns: [sp], method: site-priority}
      ea: {columns: [ea], method: earliest}
`

var convPriority = []string{"C", "A", "B"}

const convDDL = `CREATE TABLE conv (id int PRIMARY KEY, lt text, lt2 text, lt2_n int, ts_v text, ts_at timestamptz,
	ad bigint NOT NULL, cu bigint NOT NULL, mn int, mx int, sp text, ea text)`

// convColumns are conv's columns, in order.
var convColumns = "id, lt, lt2, lt2_n, ts_v, ts_at, ad, cu, mn, mx, sp, ea"

func TestMultisiteConvergeMesh(t *testing.T) { testConverge(t, false) }

func TestMultisiteConvergeHub(t *testing.T) { testConverge(t, true) }

// convWorld is one run: the sites, their processes, and what the model
// knows of the committed writes.
type convWorld struct {
	t      *testing.T
	hub    bool
	plan   convPlan
	rng    *rand.Rand // drawn from by the test goroutine only; the sites' goroutines get generators of their own
	sites  []*msSite
	byName map[string]*msSite
	cfg    string
	prods  map[string]*harness.Proc // by site
	cons   map[string]*harness.Proc // by "<site><-<from>"
	obs    map[string]*harness.Proc // the observers, by mode

	mu   sync.Mutex
	sum  map[int]int64 // per key: the committed increments of ad (and cu, the same)
	low  map[int]int   // per key: the smallest mn written
	high map[int]int   // per key: the largest mx written
	// concurrent rounds: per key, the last such round that wrote it and the
	// tag each site wrote then.
	spRound map[int]int
	spTags  map[int]map[string]string
}

// links are the consumers of the topology: site <- from.
func (w *convWorld) links() [][2]*msSite {
	var out [][2]*msSite
	for _, s := range w.sites {
		for _, f := range w.sites {
			if s != f && (!w.hub || s.name == "B" || f.name == "B") {
				out = append(out, [2]*msSite{s, f})
			}
		}
	}
	return out
}

func testConverge(t *testing.T, hub bool) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TRIBUTARY_MULTISITE_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = n
	}
	plan := convCurrentPlan()
	t.Logf("seed %d (TRIBUTARY_MULTISITE_SEED replays it); %+v", seed, plan)
	w := &convWorld{t: t, hub: hub, plan: plan, rng: rand.New(rand.NewPCG(seed, 7)), prods: map[string]*harness.Proc{},
		cons: map[string]*harness.Proc{}, obs: map[string]*harness.Proc{}, byName: map[string]*msSite{},
		sum: map[int]int64{}, low: map[int]int{}, high: map[int]int{}, spRound: map[int]int{}, spTags: map[int]map[string]string{}}
	ddl := []string{convDDL, `ALTER TABLE conv REPLICA IDENTITY FULL`, fmt.Sprintf(`INSERT INTO conv SELECT g, 'init', 'init', 0,
		'init', '2000-01-01 00:00:00+00', 1000, 1000, 500000, 500000, 'init', 'init' FROM generate_series(1, %d) g`, plan.keys)}
	w.sites = newSites(t, "conv", ddl, "A", "B", "C")
	w.cfg = conflictsFile(t, convYAML)
	for _, s := range w.sites {
		w.byName[s.name] = s
		s.setupMultisite(t, w.cfg)
		w.startProducer(s)
	}
	for _, l := range w.links() {
		w.startConsumer(l[0], l[1])
	}
	w.startObservers(ddl)
	defer func() {
		if t.Failed() {
			for k, p := range w.prods {
				t.Logf("producer %s:\n%s", k, lastLines(p.Output(), 10))
			}
			for k, p := range w.cons {
				t.Logf("consumer %s:\n%s", k, lastLines(p.Output(), 10))
			}
			for k, p := range w.obs {
				t.Logf("observer %s:\n%s", k, lastLines(p.Output(), 10))
			}
		}
	}()

	for round := 1; round <= plan.rounds; round++ {
		if round%plan.concurrentEvery == 0 {
			w.quiesce()
			w.concurrentRound(round)
			continue
		}
		w.chainRound(round)
	}
	w.quiesce()
	w.check()
}

// startProducer starts site s's producer (a hub's forwards every origin).
func (w *convWorld) startProducer(s *msSite) {
	args := s.env.producerArgs("--snapshot", "never")
	if w.hub && s.name == "B" {
		args = append(args, "--forward-origins", "all")
	}
	w.prods[s.name] = harness.StartTributary(w.t, nil, args...)
	s.env.waitSlotActive(w.t, "slot", w.prods[s.name])
}

func (w *convWorld) startConsumer(s, from *msSite) {
	w.cons[s.name+"<-"+from.name] = s.consumeProc(w.t, from, w.cfg)
}

// startObservers starts a per-key and a transactional consumer of B's
// prefix, into databases of their own at B's cluster; they run for the
// whole test. Each database starts with the rows every site starts with
// (ddl): B's producer takes no snapshot, so a key no transaction changes
// reaches an observer only from there.
func (w *convWorld) startObservers(ddl []string) {
	b := w.byName["B"]
	for _, mode := range []string{"per-key", "transactional"} {
		db := "obs_" + strings.ReplaceAll(mode, "-", "_")
		b.env.pg.Exec(w.t, "CREATE DATABASE "+db)
		dsn := strings.Replace(b.env.pg.DSN, "/postgres?", "/"+db+"?", 1)
		oc := connect(w.t, dsn)
		for _, stmt := range ddl {
			if _, err := oc.Exec(context.Background(), stmt); err != nil {
				w.t.Fatalf("%s: %v", stmt, err)
			}
		}
		w.obs[mode] = harness.StartTributary(w.t, nil, "consumer", "--brokers", strings.Join(b.env.kafka.Brokers, ","),
			"--registry", b.env.kafka.RegistryURL, "--prefix", b.env.prefix, "--name", db, "--target", dsn,
			"--mode", mode, "--on-conflict", "upsert", "--log-format", "json")
	}
}

// convTxn is one transaction of the workload at one site.
type convTxn struct {
	keys  []int
	stmts []string
	// the model's share, counted when it commits
	sum       map[int]int64
	low, high map[int]int
	spTags    map[int]string
}

// chainRound: at each site, several transactions on disjoint keys each
// change their keys several times in a row, are all held open, and commit
// in random order; the other sites do the same at the same time. At one
// site, when all its transactions are open, a process may be killed (the
// seed decides): a producer or a consumer, started again when the round
// has committed everywhere.
func (w *convWorld) chainRound(round int) {
	kill := w.rng.IntN(3) // 0: a producer, 1: a consumer, 2: none
	switch round {
	case 1:
		kill = 0
	case 2:
		kill = 1
	}
	killAt := w.sites[w.rng.IntN(3)]
	killLink := w.rng.IntN(2) // which of killAt's consumers, when kill is 1
	var killed func()
	plans := map[string][]*convTxn{}
	// Each site commits in an order drawn from a generator of its own, so
	// that the seed replays a round whatever order the sites run in.
	orders := map[string]*rand.Rand{}
	for _, s := range w.sites {
		orders[s.name] = rand.New(rand.NewPCG(w.rng.Uint64(), 7))
	}
	for _, s := range w.sites {
		keys := w.rng.Perm(w.plan.keys)
		var txns []*convTxn
		for i := 0; i < w.plan.txns && len(keys) > 0; i++ {
			n := min(len(keys), 1+w.rng.IntN(3))
			txns = append(txns, w.chainTxn(s.name, round, i, keys[:n]))
			keys = keys[n:]
		}
		plans[s.name] = txns
	}
	var wg sync.WaitGroup
	for _, s := range w.sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.runHeld(s, plans[s.name], orders[s.name], func() {
				if s != killAt {
					return
				}
				switch kill {
				case 0:
					w.prods[s.name].Kill()
					killed = func() { w.startProducer(s) }
				case 1:
					links := w.links()
					var mine [][2]*msSite
					for _, l := range links {
						if l[0] == s {
							mine = append(mine, l)
						}
					}
					l := mine[killLink%len(mine)]
					w.cons[l[0].name+"<-"+l[1].name].Kill()
					killed = func() { w.startConsumer(l[0], l[1]) }
				}
			})
		}()
	}
	wg.Wait()
	if killed != nil {
		killed()
	}
}

// chainTxn is a transaction at site that changes each of keys several times,
// each time a random choice of the chain groups.
func (w *convWorld) chainTxn(site string, round, i int, keys []int) *convTxn {
	tx := &convTxn{sum: map[int]int64{}, low: map[int]int{}, high: map[int]int{}}
	for _, k := range keys {
		id := k + 1
		tx.keys = append(tx.keys, id)
		for u := range 1 + w.rng.IntN(3) {
			tag := fmt.Sprintf("%s-r%d-t%d-k%d-u%d", site, round, i, id, u)
			var sets []string
			for len(sets) == 0 {
				if w.rng.IntN(2) == 0 {
					sets = append(sets, fmt.Sprintf("lt = '%s'", tag))
				}
				if w.rng.IntN(2) == 0 {
					sets = append(sets, fmt.Sprintf("lt2 = '%s', lt2_n = %d", tag, w.rng.IntN(1000)))
				}
				if w.rng.IntN(3) == 0 {
					sets = append(sets, fmt.Sprintf("ts_v = '%s', ts_at = clock_timestamp()", tag))
				}
				if w.rng.IntN(2) == 0 {
					d := int64(w.rng.IntN(199) - 99)
					sets = append(sets, fmt.Sprintf("ad = ad + %d, cu = cu + %d", d, d))
					tx.sum[id] += d
				}
				if w.rng.IntN(3) == 0 {
					x := w.rng.IntN(1_000_000)
					sets = append(sets, fmt.Sprintf("mn = %d", x))
					if v, ok := tx.low[id]; !ok || x < v {
						tx.low[id] = x
					}
				}
				if w.rng.IntN(3) == 0 {
					x := w.rng.IntN(1_000_000)
					sets = append(sets, fmt.Sprintf("mx = %d", x))
					tx.high[id] = max(tx.high[id], x)
				}
			}
			tx.stmts = append(tx.stmts, fmt.Sprintf("UPDATE conv SET %s WHERE id = %d", strings.Join(sets, ", "), id))
		}
	}
	return tx
}

// concurrentRound: every site writes site-priority and earliest values of
// a random choice of keys, in transactions all written before any commits
// (and after the sites are quiesced), so that every pair of them conflicts:
// the workload under which those routines converge.
func (w *convWorld) concurrentRound(round int) {
	t := w.t
	ctx := context.Background()
	type held struct {
		tx  *convTxn
		ptx pgx.Tx
	}
	var open []held
	for _, s := range w.sites {
		tx := &convTxn{spTags: map[int]string{}}
		for _, k := range w.rng.Perm(w.plan.keys)[:1+w.rng.IntN(w.plan.keys)] {
			id := k + 1
			tag := fmt.Sprintf("%s-c%d-k%d", s.name, round, id)
			tx.keys = append(tx.keys, id)
			tx.spTags[id] = tag
			tx.stmts = append(tx.stmts, fmt.Sprintf("UPDATE conv SET sp = '%[1]s', ea = '%[1]s' WHERE id = %[2]d", tag, id))
		}
		ptx, err := s.env.pg.Conn(t).Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.writeTxn(ctx, ptx, tx); err != nil {
			t.Fatalf("concurrent round at %s: %v", s.name, err)
		}
		open = append(open, held{tx, ptx})
	}
	for _, i := range w.rng.Perm(len(open)) {
		if err := open[i].ptx.Commit(ctx); err != nil {
			t.Fatalf("concurrent round: commit: %v", err)
		}
		w.committed(open[i].tx)
	}
}

// runHeld runs txns at s: each opens, locks its keys (NOWAIT: a key a
// consumer is applying sits this round out, so that no transaction waits
// for a lock while another waits to commit), writes, and waits; when all
// are written, open() runs, and they commit in an order drawn from order. A transaction
// a deadlock or a lock conflict aborts is retried once the others have
// committed; one whose keys stay locked gives up for the round.
func (w *convWorld) runHeld(s *msSite, txns []*convTxn, order *rand.Rand, open func()) {
	t := w.t
	ctx := context.Background()
	type held struct {
		tx  *convTxn
		c   *pgx.Conn
		ptx pgx.Tx
	}
	pending := txns
	for attempt := 0; len(pending) > 0 && attempt < 5; attempt++ {
		var opened []held
		var retry []*convTxn
		for _, tx := range pending {
			c := s.env.pg.Conn(t)
			ptx, err := c.Begin(ctx)
			if err != nil {
				t.Errorf("begin at %s: %v", s.name, err)
				return
			}
			if err := w.writeTxn(ctx, ptx, tx); err != nil {
				ptx.Rollback(ctx)
				c.Close(ctx)
				if isRetryable(err) {
					retry = append(retry, tx)
					continue
				}
				t.Errorf("workload at %s: %v", s.name, err)
				return
			}
			opened = append(opened, held{tx, c, ptx})
		}
		if open != nil && attempt == 0 {
			open()
		}
		for _, i := range order.Perm(len(opened)) {
			h := opened[i]
			if err := h.ptx.Commit(ctx); err != nil {
				if isRetryable(err) {
					retry = append(retry, h.tx)
				} else {
					t.Errorf("commit at %s: %v", s.name, err)
				}
			} else {
				w.committed(h.tx)
			}
			h.c.Close(ctx)
		}
		pending = retry
	}
}

// writeTxn locks tx's keys and runs its statements in ptx.
func (w *convWorld) writeTxn(ctx context.Context, ptx pgx.Tx, tx *convTxn) error {
	keys := slices.Clone(tx.keys)
	slices.Sort(keys)
	if _, err := ptx.Exec(ctx, `SELECT id FROM conv WHERE id = ANY($1) ORDER BY id FOR UPDATE NOWAIT`, keys); err != nil {
		return err
	}
	for _, st := range tx.stmts {
		if _, err := ptx.Exec(ctx, st); err != nil {
			return err
		}
	}
	return nil
}

func isRetryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001" || pe.Code == "55P03")
}

// committed adds tx's share to the model.
func (w *convWorld) committed(tx *convTxn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, d := range tx.sum {
		w.sum[k] += d
	}
	for k, x := range tx.low {
		if v, ok := w.low[k]; !ok || x < v {
			w.low[k] = x
		}
	}
	for k, x := range tx.high {
		w.high[k] = max(w.high[k], x)
	}
	for k, tag := range tx.spTags {
		round, _ := strconv.Atoi(tag[strings.Index(tag, "-c")+2 : strings.LastIndex(tag, "-k")])
		if w.spRound[k] < round {
			w.spRound[k], w.spTags[k] = round, map[string]string{}
		}
		w.spTags[k][tag[:1]] = tag
	}
}

// quiesce waits until every producer has published everything committed at
// its site and every consumer has applied every frame of the prefix it
// reads, and that again, until a pass finds no new frame (a hub publishes
// what its consumers apply).
func (w *convWorld) quiesce() {
	t := w.t
	prev := ""
	for {
		for _, s := range w.sites {
			target := s.query(t, `SELECT pg_current_wal_lsn()::text`)
			waitValue(t, s, "true", `SELECT (confirmed_flush_lsn >= $1::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = 'slot'`, target)
		}
		last := map[string]string{}
		for _, s := range w.sites {
			last[s.name] = lastFrameLSN(t, s)
		}
		for _, l := range w.links() {
			waitValue(t, l[0], "true", `SELECT (coalesce(max(commit_lsn), '0/0') >= $1::pg_lsn)::text FROM tributary_checkpoint
				WHERE consumer = $2`, last[l[1].name], "from_"+l[1].name)
		}
		cur := fmt.Sprint(last)
		if cur == prev {
			return
		}
		prev = cur
	}
}

// lastFrameLSN is the commit LSN of the last source transaction s's producer
// published.
func lastFrameLSN(t *testing.T, s *msSite) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fr := txlog.NewFrames(s.env.kafka.Opts(), s.env.kafka.Admin(t), txlog.NewBuiltinFrameDecoder(), schemas.TransactionsTopic(s.env.prefix))
	b, err := fr.Bounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Empty() {
		return "0/0"
	}
	// Heartbeat frames have no record in a data partition, so a per-key
	// consumer never checkpoints them: the last source transaction's frame.
	for end := b.End; ; {
		off, f, err := fr.Last(ctx, b, end)
		if err != nil {
			t.Fatal(err)
		}
		if f == nil {
			return "0/0"
		}
		if !f.Heartbeat() {
			return f.CommitLSN.String()
		}
		end = off
	}
}

// check compares every site with every other and with the model, and the
// conflicts topics and the observers with what they must hold.
func (w *convWorld) check() {
	t := w.t
	a, b, c := w.byName["A"], w.byName["B"], w.byName["C"]
	dump := `SELECT ` + convColumns + ` FROM conv ORDER BY id`
	waitEqual(t, "conv", a, b, c)
	for _, p := range w.cons {
		if done, err := p.Exited(); done {
			t.Fatalf("a consumer stopped: %v\n%s", err, lastLines(p.Output(), 20))
		}
	}
	// What the logs say of the registers: each write's site, commit time
	// and order, from the producer of the site where it was made.
	for _, p := range w.prods {
		p.Kill() // ReadLog wants no producer writing
	}
	type write struct {
		site string
		at   time.Time
		lsn  uint64
		pos  int64
		val  string
		ts   time.Time // ts_at
	}
	last := map[string]map[int]write{"lt": {}, "lt2": {}, "ts": {}, "ea": {}}
	laterThan := func(x, y write, byTS bool) bool {
		xt, yt := x.at, y.at
		if byTS {
			xt, yt = x.ts, y.ts
		}
		switch {
		case !xt.Equal(yt):
			return xt.After(yt)
		case x.site != y.site:
			return slices.Index(convPriority, x.site) < slices.Index(convPriority, y.site)
		case x.lsn != y.lsn:
			return x.lsn > y.lsn
		}
		return x.pos > y.pos
	}
	eaTimes := map[string]time.Time{}
	own := map[string]map[int64]bool{} // each site's commit times, in microseconds
	var forwarded []schemas.Frame
	for _, s := range w.sites {
		own[s.name] = map[int64]bool{}
		for _, tx := range harness.ReadLog(t, s.env.kafka, s.env.reg, s.env.prefix).Txns {
			if tx.Frame.Origin != "" {
				forwarded = append(forwarded, tx.Frame)
				continue // forwarded by the hub
			}
			own[s.name][tx.Frame.CommitTime.UnixMicro()] = true
			for _, ev := range tx.Events {
				if !strings.HasSuffix(ev.Topic, ".public.conv") || ev.Op != schemas.OpUpdate {
					continue
				}
				id := int(ev.After["id"].(int32))
				wr := write{site: s.name, at: tx.Frame.CommitTime, lsn: uint64(tx.Frame.CommitLSN), pos: ev.Position}
				for _, g := range []string{"lt", "lt2", "ts", "ea"} {
					col := map[string]string{"lt": "lt", "lt2": "lt2", "ts": "ts_v", "ea": "ea"}[g]
					after, _ := ev.After[col].(string)
					before, _ := ev.Before[col].(string)
					if after == before {
						continue
					}
					x := wr
					x.val = after
					if g == "ts" {
						x.ts, _ = ev.After["ts_at"].(time.Time)
					}
					if g == "ea" {
						eaTimes[after] = tx.Frame.CommitTime
						continue
					}
					if cur, ok := last[g][id]; !ok || laterThan(x, cur, g == "ts") {
						last[g][id] = x
					}
				}
			}
		}
	}
	// The hub forwards each transaction with its origin and its own source
	// commit time, which latest compares at the spokes.
	for _, f := range forwarded {
		site := strings.TrimPrefix(f.Origin, "tributary_")
		if !w.hub || !own[site][f.CommitTime.UnixMicro()] {
			t.Fatalf("a frame forwarded with origin %s at %s is not one of %s's commits (hub %v)", f.Origin, f.CommitTime, site, w.hub)
		}
	}
	if w.hub && len(forwarded) == 0 {
		t.Fatal("the hub forwarded nothing")
	}
	rows, err := a.conn(t).Query(context.Background(), dump)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id int
		var lt, lt2, tsv, sp, ea string
		var lt2n, mn, mx int
		var tsAt time.Time
		var ad, cu int64
		if err := rows.Scan(&id, &lt, &lt2, &lt2n, &tsv, &tsAt, &ad, &cu, &mn, &mx, &sp, &ea); err != nil {
			t.Fatal(err)
		}
		n++
		want := func(g, got, def string) {
			wr, ok := last[g][id]
			exp := def
			if ok {
				exp = wr.val
			}
			if got != exp {
				t.Errorf("row %d: %s is %s, want %s (%+v)", id, g, got, exp, wr)
			}
		}
		want("lt", lt, "init")
		want("lt2", lt2, "init")
		want("ts", tsv, "init")
		if ad != 1000+w.sum[id] || cu != ad {
			t.Errorf("row %d: ad %d, cu %d, want both 1000 + the committed increments %d", id, ad, cu, w.sum[id])
		}
		wantMn, wantMx := 500000, 500000
		if v, ok := w.low[id]; ok {
			wantMn = min(wantMn, v)
		}
		if v, ok := w.high[id]; ok {
			wantMx = max(wantMx, v)
		}
		if mn != wantMn || mx != wantMx {
			t.Errorf("row %d: mn %d mx %d, want %d and %d (every value written: a min and a max register)", id, mn, mx, wantMn, wantMx)
		}
		// site-priority and earliest: of the last concurrent round that
		// wrote the row, the best-ranked site's value, and the earliest.
		wantSp, wantEa := "init", "init"
		if tags := w.spTags[id]; len(tags) > 0 {
			var sites []string
			for s := range tags {
				sites = append(sites, s)
			}
			sort.Slice(sites, func(i, j int) bool {
				return slices.Index(convPriority, sites[i]) < slices.Index(convPriority, sites[j])
			})
			wantSp = tags[sites[0]]
			best := sites[0]
			for _, s := range sites[1:] {
				ts, bt := eaTimes[tags[s]], eaTimes[tags[best]]
				if ts.Before(bt) {
					best = s
				}
			}
			wantEa = tags[best]
		}
		if sp != wantSp || ea != wantEa {
			t.Errorf("row %d: sp %s ea %s, want %s and %s", id, sp, ea, wantSp, wantEa)
		}
	}
	if n != w.plan.keys {
		t.Fatalf("conv has %d rows, want %d", n, w.plan.keys)
	}
	if t.Failed() {
		t.FailNow()
	}
	total := 0
	for _, l := range w.links() {
		total += checkConflictsOnce(t, l[0], l[1])
	}
	// The observers ran all along and applied all of B's stream.
	lastB := lastFrameLSN(t, b)
	for mode, p := range w.obs {
		if done, err := p.Exited(); done {
			t.Fatalf("the %s consumer of B's prefix stopped: %v\n%s", mode, err, lastLines(p.Output(), 20))
		}
		db := "obs_" + strings.ReplaceAll(mode, "-", "_")
		oc := connect(t, strings.Replace(b.env.pg.DSN, "/postgres?", "/"+db+"?", 1))
		if mode == "transactional" {
			waitFor(t, "the "+mode+" consumer of B's prefix to apply it all", func() bool {
				var ok bool
				err := oc.QueryRow(context.Background(), `SELECT coalesce(max(commit_lsn), '0/0') >= $1::pg_lsn FROM tributary_checkpoint`,
					lastB).Scan(&ok)
				return err == nil && ok
			})
		}
		if !w.hub {
			continue
		}
		// B forwards everything it applies: a replica of its stream is B.
		// Per-key workers checkpoint each partition on its own, so no one
		// checkpoint says that worker has applied it all: the per-key
		// replica is waited for until it holds what B holds.
		want := b.query(t, `SELECT string_agg(t::text, ' ' ORDER BY id) FROM (`+dump+`) t`)
		var got string
		deadline := time.Now().Add(90 * time.Second)
		for {
			if err := oc.QueryRow(context.Background(), `SELECT coalesce(string_agg(t::text, ' ' ORDER BY id), '') FROM (`+dump+`) t`).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got == want || mode == "transactional" || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if got != want {
			t.Fatalf("the %s consumer of the hub's prefix holds\n%s\nthe hub holds\n%s", mode, got, want)
		}
	}
	t.Logf("%d rows converged at three sites; %d conflicts published once each", n, total)
	_ = c
}
