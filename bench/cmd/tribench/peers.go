package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

func newResult(rep int, wl, peer string, rows int64) *Result {
	return &Result{Workload: wl, Peer: peer, Rep: rep, Rows: rows, StartSecs: -1, CPU: -1, SrvCPU: -1, RSSMB: -1, Load0: loadavg()}
}

func (r *Result) fail(format string, a ...any) *Result {
	r.Err = fmt.Sprintf(format, a...)
	r.Load1 = loadavg()
	return r
}

func (b *Bench) logPath(name string) string {
	return filepath.Join(b.cache, "logs", fmt.Sprintf("%s-%s.log", b.runID, name))
}

// slotPID is the walsender serving a slot, 0 when inactive.
func (b *Bench) slotPID(ctx context.Context, slot string) int {
	v, err := b.src.QueryVal(ctx, `SELECT active_pid::text FROM pg_replication_slots WHERE slot_name = $1`, slot)
	if err != nil || v == "" {
		return 0
	}
	pid, _ := strconv.Atoi(v)
	return pid
}

// applyPID is the apply worker of a subscription on the native target, 0
// when it is not running.
func (b *Bench) applyPID(ctx context.Context, sub string) int {
	v, err := b.nat.QueryVal(ctx, `SELECT pid::text FROM pg_stat_subscription WHERE subname = $1 AND relid IS NULL`, sub)
	if err != nil || v == "" {
		return 0
	}
	pid, _ := strconv.Atoi(v)
	return pid
}

// srvSampler keeps the last CPU reading of a server process found by find.
type srvSampler struct {
	pid  int
	last float64
	find func() int
}

func (s *srvSampler) sample() {
	if s.pid == 0 {
		s.pid = s.find()
	}
	if s.pid != 0 {
		if c := procCPU(s.pid); c >= 0 {
			s.last = c
		}
	}
}

func (s *srvSampler) value() float64 {
	if s.pid == 0 {
		return -1
	}
	return s.last
}

func (b *Bench) recvlogical(ctx context.Context, rep int, wl, slot, pub, end string, rows int64) *Result {
	r := newResult(rep, wl, peerRecv, rows)
	args := []string{filepath.Join(b.pgbin, "pg_recvlogical"), "-d", b.src.ConnString(), "--slot", slot, "--start",
		"--endpos", end, "--no-loop", "-o", "proto_version=1", "-o", "publication_names=" + pub, "-f", "/dev/null"}
	r.Cmd = shellQuote(args)
	p, err := startProc("pg_recvlogical", b.root, b.logPath(fmt.Sprintf("recv-%s-%d", wl, rep)), nil, args...)
	if err != nil {
		return r.fail("%v", err)
	}
	ws := &srvSampler{find: func() int { return b.slotPID(ctx, slot) }}
	for !p.Exited() {
		ws.sample()
		time.Sleep(100 * time.Millisecond)
		if time.Since(p.Start) > b.cfg.Timeout {
			p.Kill()
			return r.fail("timed out after %s", b.cfg.Timeout)
		}
	}
	r.Secs = p.End.Sub(p.Start).Seconds()
	r.CPU, r.RSSMB = p.Rusage()
	r.SrvCPU = ws.value()
	r.Load1 = loadavg()
	if p.err != nil {
		return r.fail("%v: %s", p.err, p.Tail(10))
	}
	return r
}

func (b *Bench) producerArgs(prefix, slot, pub, snapshot string) []string {
	return []string{b.bin, "producer", "--source", b.src.DSN, "--publication", pub, "--slot", slot,
		"--snapshot", snapshot, "--brokers", b.kafka.Brokers, "--registry", b.reg, "--prefix", prefix, "--log-format", "json"}
}

// producer drains slot into Kafka until the last committed frame on
// <prefix>.transactions ends at end.
func (b *Bench) producer(ctx context.Context, rep int, wl, prefix, slot, pub, end string, rows int64) *Result {
	r := newResult(rep, wl, peerProducer, rows)
	endLSN, err := pglogrepl.ParseLSN(end)
	if err != nil {
		return r.fail("%v", err)
	}
	args := append(b.producerArgs(prefix, slot, pub, "never"),
		b.producerExtra(fmt.Sprintf("%s-%d", strings.TrimSuffix(chartName(wl), ".svg"), rep))...)
	r.Cmd = b.tributaryCmd(args)
	txTopic := prefix + ".transactions"
	_, before, _ := b.kafka.EndOffsets(ctx, txTopic, true)
	broker0 := b.kafka.mark()
	p, err := startProc("producer", b.root, b.logPath(fmt.Sprintf("producer-%s-%d", wl, rep)), b.tributaryEnv(), args...)
	if err != nil {
		return r.fail("%v", err)
	}
	defer p.Stop()
	ws := &srvSampler{find: func() int { return b.slotPID(ctx, slot) }}
	var lastLSO int64 = -1
	err = pollUntil(b.cfg.Timeout, 200*time.Millisecond, func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("producer exited: %v\n%s", p.err, p.Tail(15))
		}
		ws.sample()
		_, lso, err := b.kafka.EndOffsets(ctx, txTopic, true)
		if err != nil || lso == lastLSO {
			return false, nil
		}
		lastLSO = lso
		if lso > before && r.StartSecs < 0 {
			r.StartSecs = time.Since(p.Start).Seconds()
		}
		f, err := b.kafka.LastFrame(ctx, txTopic)
		if err != nil || f == nil {
			return false, nil
		}
		return f.EndLSN >= endLSN, nil
	})
	r.Secs = time.Since(p.Start).Seconds()
	r.CPU = treeCPU(p.Pid())
	r.RSSMB = procHWM(p.Pid())
	r.SrvCPU = ws.value()
	r.Load1 = loadavg()
	// Its components, for the CPU per row of the whole capture, which
	// pg_recvlogical's (a file, no broker) does not include.
	r.Parts = map[string]float64{partProducer: r.CPU, partProdWS: r.SrvCPU}
	b.kafka.addBrokerCPU(r.Parts, broker0)
	if err != nil {
		return r.fail("%v", err)
	}
	return r
}

// check is a consumerSink check: check on target p must return want.
func (b *Bench) check(ctx context.Context, p *PG, check, want string) func(*Proc) (string, error) {
	return func(*Proc) (string, error) {
		got, err := p.QueryVal(ctx, check)
		if err != nil {
			return "", err
		}
		if got != want {
			return "", fmt.Errorf("target check %q: got %s, want %s", check, got, want)
		}
		return "target verified: " + check + " = " + want, nil
	}
}

// consumerSink runs `tributary consumer --until-caught-up` with the sink
// arguments extra, then verify checks what it wrote and returns the note.
func (b *Bench) consumerSink(ctx context.Context, rep int, wl, peer, prefix, name string, rows int64, extra []string,
	verify func(*Proc) (string, error)) *Result {
	r := newResult(rep, wl, peer, rows)
	args := append([]string{b.bin, "consumer", "--brokers", b.kafka.Brokers, "--registry", b.reg, "--prefix", prefix,
		"--name", name}, extra...)
	args = append(args, "--until-caught-up", "--log-format", "json")
	args = append(args, b.consumerExtra(fmt.Sprintf("%s-%s-%d", strings.TrimSuffix(chartName(wl), ".svg"), strings.TrimSuffix(chartName(peer), ".svg"), rep))...)
	r.Cmd = b.tributaryCmd(args)
	p, err := startProc("consumer", b.root, b.logPath(fmt.Sprintf("consumer-%s-%s-%d", strings.TrimSuffix(chartName(wl), ".svg"), name, rep)), b.tributaryEnv(), args...)
	if err != nil {
		return r.fail("%v", err)
	}
	err = p.Wait(b.cfg.Timeout)
	r.Secs = p.End.Sub(p.Start).Seconds()
	r.CPU, r.RSSMB = p.Rusage()
	r.Load1 = loadavg()
	if err != nil {
		return r.fail("%v: %s", err, p.Tail(15))
	}
	if r.Note, err = verify(p); err != nil {
		return r.fail("%v", err)
	}
	return r
}

// native enables the subscription and waits until its replication origin
// has applied the transaction that ends at end.
func (b *Bench) native(ctx context.Context, rep int, wl, sub, slot, end string, rows int64, check, want string) *Result {
	r := newResult(rep, wl, peerNative, rows)
	r.Cmd = "ALTER SUBSCRIPTION " + sub + " ENABLE  -- on the native target; subscription created before the backlog with (enabled = false, copy_data = false)"
	t0 := time.Now()
	if err := b.nat.Exec(ctx, `ALTER SUBSCRIPTION `+sub+` ENABLE`); err != nil {
		return r.fail("%v", err)
	}
	defer b.nat.Exec(context.Background(), `ALTER SUBSCRIPTION `+sub+` DISABLE`)
	apply := &srvSampler{find: func() int { return b.applyPID(ctx, sub) }}
	ws := &srvSampler{find: func() int { return b.slotPID(ctx, slot) }}
	q := fmt.Sprintf(`SELECT coalesce((SELECT remote_lsn >= '%s'::pg_lsn FROM pg_replication_origin_status
		WHERE external_id = 'pg_' || (SELECT oid FROM pg_subscription WHERE subname = '%s')), false)::text`, end, sub)
	err := pollUntil(b.cfg.Timeout, e2ePollPeriod, func() (bool, error) {
		apply.sample()
		ws.sample()
		v, err := b.nat.QueryVal(ctx, q)
		return v == "true", err
	})
	r.Secs = time.Since(t0).Seconds()
	r.CPU = apply.value() // the apply worker is the "client" here
	r.RSSMB = procHWM(apply.pid)
	r.SrvCPU = ws.value()
	r.Parts = map[string]float64{partNativeWS: ws.value(), partApply: apply.value()}
	r.Load1 = loadavg()
	if err != nil {
		return r.fail("%v", err)
	}
	got, err := b.nat.QueryVal(ctx, check)
	if err != nil {
		return r.fail("%v", err)
	}
	if got != want {
		return r.fail("target check %q: got %s, want %s", check, got, want)
	}
	r.Note = "apply worker CPU in the CPU column, its VmHWM as RSS; target verified"
	return r
}

// ---------------------------------------------------------------- Debezium

func (b *Bench) fetchDebezium(ctx context.Context) (string, error) {
	dir := filepath.Join(b.cache, "debezium")
	home := filepath.Join(dir, "debezium-server-"+b.cfg.DbzVersion)
	if _, err := os.Stat(filepath.Join(home, "run.sh")); err == nil {
		return home, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tgz := filepath.Join(dir, "debezium-server-dist-"+b.cfg.DbzVersion+".tar.gz")
	if _, err := os.Stat(tgz); err != nil {
		logf("fetching io.debezium:debezium-server-dist:%s:tar.gz from Maven Central", b.cfg.DbzVersion)
		if _, err := run(ctx, dir, nil, "mvn", "-q", "-B",
			"org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy",
			"-Dartifact=io.debezium:debezium-server-dist:"+b.cfg.DbzVersion+":tar.gz", "-DoutputDirectory=."); err != nil {
			return "", err
		}
	}
	tmp := home + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	if _, err := run(ctx, tmp, nil, "tar", "xzf", tgz); err != nil {
		return "", err
	}
	if err := os.Rename(filepath.Join(tmp, "debezium-server"), home); err != nil {
		return "", err
	}
	_ = os.RemoveAll(tmp)
	return home, nil
}

// startDebezium starts Debezium Server on slot and publication pub for the
// public tables, writing to topics <dprefix>.public.<table>, which it creates.
func (b *Bench) startDebezium(ctx context.Context, tag, dprefix, slot, pub string, tables []string) (*Proc, []string, string, error) {
	if b.dbzHome == "" {
		return nil, nil, "", fmt.Errorf("%s", b.dbzErr)
	}
	var topics, include []string
	for _, t := range tables {
		topic := dprefix + ".public." + t
		if err := b.kafka.CreateTopic(ctx, topic, 3); err != nil {
			return nil, nil, "", fmt.Errorf("create topic %s: %v", topic, err)
		}
		topics = append(topics, topic)
		include = append(include, "public."+t)
	}
	offsets := filepath.Join(b.cache, "logs", b.runID+"-dbz-offsets-"+tag+".dat")
	_ = os.Remove(offsets)
	props := strings.Join([]string{
		"debezium.sink.type=kafka",
		"debezium.sink.kafka.producer.bootstrap.servers=" + b.kafka.Brokers,
		"debezium.sink.kafka.producer.key.serializer=org.apache.kafka.common.serialization.StringSerializer",
		"debezium.sink.kafka.producer.value.serializer=org.apache.kafka.common.serialization.StringSerializer",
		"debezium.format.key=json",
		"debezium.format.value=json",
		"debezium.format.key.schemas.enable=false",
		"debezium.format.value.schemas.enable=false",
		"debezium.source.connector.class=io.debezium.connector.postgresql.PostgresConnector",
		"debezium.source.plugin.name=pgoutput",
		"debezium.source.slot.name=" + slot,
		"debezium.source.publication.name=" + pub,
		"debezium.source.publication.autocreate.mode=disabled",
		"debezium.source.snapshot.mode=no_data",
		"debezium.source.tombstones.on.delete=false",
		"debezium.source.database.hostname=127.0.0.1",
		"debezium.source.database.port=" + strconv.Itoa(b.src.Port),
		"debezium.source.database.user=postgres",
		"debezium.source.database.password=unused",
		"debezium.source.database.dbname=postgres",
		"debezium.source.topic.prefix=" + dprefix,
		"debezium.source.table.include.list=" + strings.Join(include, ","),
		"debezium.source.offset.storage.file.filename=" + offsets,
		"debezium.source.offset.flush.interval.ms=1000",
		"quarkus.http.port=" + strconv.Itoa(freePort()),
		"quarkus.log.level=INFO",
		"quarkus.log.console.json=false",
	}, "\n") + "\n"
	conf := filepath.Join(b.dbzHome, "config", "application.properties")
	if err := os.WriteFile(conf, []byte(props), 0o644); err != nil {
		return nil, nil, "", err
	}
	cmd := "cd " + b.dbzHome + " && ./run.sh   # config/application.properties:\n" + props
	var env []string
	if b.dbzJava != "" {
		env = append(env, "JAVA_HOME="+b.dbzJava)
		cmd = "JAVA_HOME=" + b.dbzJava + " " + cmd
	}
	p, err := startProc("debezium", b.dbzHome, b.logPath("debezium-"+tag), env, "bash", "run.sh")
	return p, topics, cmd, err
}

// debezium drains slot with Debezium Server until its topics hold records
// records (one per row change: tombstones are off).
func (b *Bench) debezium(ctx context.Context, rep int, wl, prefix, slot, pub string, tables []string, records int64) *Result {
	r := newResult(rep, wl, peerDbz, records)
	p, topics, cmd, err := b.startDebezium(ctx, fmt.Sprintf("%s-%d", strings.TrimSuffix(chartName(wl), ".svg"), rep), "dbz_"+prefix, slot, pub, tables)
	r.Cmd = cmd
	if err != nil {
		return r.fail("%v", err)
	}
	defer p.Stop()
	ws := &srvSampler{find: func() int { return b.slotPID(ctx, slot) }}
	var cpu, rss float64 = -1, -1
	err = pollUntil(b.cfg.Timeout, 200*time.Millisecond, func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("Debezium Server exited: %v\n%s", p.err, p.Tail(25))
		}
		ws.sample()
		if c := treeCPU(p.Pid()); c >= 0 {
			cpu = c
		}
		var n int64
		for _, topic := range topics {
			_, c, err := b.kafka.EndOffsets(ctx, topic, false)
			if err != nil {
				return false, nil
			}
			n += c
		}
		if n > 0 && r.StartSecs < 0 {
			r.StartSecs = time.Since(p.Start).Seconds()
		}
		return n >= records, nil
	})
	r.Secs = time.Since(p.Start).Seconds()
	if c := treeCPU(p.Pid()); c >= 0 {
		cpu = c
	}
	rss = procHWM(javaPID(p.Pid()))
	r.CPU, r.RSSMB = cpu, rss
	r.SrvCPU = ws.value()
	r.Load1 = loadavg()
	if err != nil {
		return r.fail("%v", err)
	}
	r.Note = "JSON values without schemas, default batch/queue sizes and default JVM heap"
	return r
}

// javaForDebezium finds a JDK of version 21 or later (Debezium Server 3.x is
// compiled for Java 21): $DEBEZIUM_JAVA_HOME, else the java on PATH when it is
// new enough, else the newest /usr/lib/jvm/* that is.
func javaForDebezium() (home, version string, err error) {
	major := func(java string) (int, string) {
		out, err := exec.Command(java, "-version").CombinedOutput()
		if err != nil {
			return 0, ""
		}
		line := strings.SplitN(string(out), "\n", 2)[0]
		i := strings.IndexByte(line, '"')
		if i < 0 {
			return 0, line
		}
		v := line[i+1:]
		m, _ := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
		return m, strings.TrimSpace(line)
	}
	if h := os.Getenv("DEBEZIUM_JAVA_HOME"); h != "" {
		_, v := major(filepath.Join(h, "bin", "java"))
		return h, v, nil
	}
	if m, v := major("java"); m >= 21 {
		return "", v, nil
	}
	homes, _ := filepath.Glob("/usr/lib/jvm/*")
	best, bestV, bestM := "", "", 0
	for _, h := range homes {
		if m, v := major(filepath.Join(h, "bin", "java")); m >= 21 && m > bestM {
			best, bestV, bestM = h, v, m
		}
	}
	if best == "" {
		return "", "", fmt.Errorf("Debezium Server 3.x needs Java 21 or later (class file version 65); `java -version` is older and no JDK >= 21 is in /usr/lib/jvm (set DEBEZIUM_JAVA_HOME)")
	}
	return best, bestV, nil
}

// javaPID: run.sh execs java, so it is the same pid; fall back to a child.
func javaPID(pid int) int {
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) == "java" {
		return pid
	}
	for _, c := range children(pid) {
		return c
	}
	return pid
}

// ---------------------------------------------------------------- one big transaction

func (b *Bench) repBigTx(ctx context.Context, rep int, prefix string) error {
	s := b.src
	_ = b.dropSlots(ctx, "recv_big", "trib_big")
	if err := s.Exec(ctx,
		`DROP PUBLICATION IF EXISTS pub_big`, `DROP TABLE IF EXISTS big1`,
		`CREATE TABLE big1 `+tableDDL+` WITH (autovacuum_enabled = false)`,
		`CREATE PUBLICATION pub_big FOR TABLE big1`,
		`SELECT pg_create_logical_replication_slot('recv_big', 'pgoutput')`,
		`SELECT pg_create_logical_replication_slot('trib_big', 'pgoutput')`); err != nil {
		return err
	}
	c, err := s.Conn(ctx)
	if err != nil {
		return err
	}
	n := b.cfg.BigRows
	logf("writing one transaction of %d rows", n)
	end, err := b.lastTxEnd(ctx, c, "pub_big",
		fmt.Sprintf(`INSERT INTO big1 SELECT %s FROM generate_series(1, %d) g`, rowExpr("g"), n))
	c.Close(ctx)
	if err != nil {
		return err
	}
	b.add(b.recvlogical(ctx, rep, wBigTx, "recv_big", "pub_big", end, int64(n)))
	b.add(b.producer(ctx, rep, wBigTx, prefix, "trib_big", "pub_big", end, int64(n)))
	return b.dropSlots(ctx, "recv_big", "trib_big")
}

// ---------------------------------------------------------------- snapshot

// snapAppName is the application_name of the snapshot producer's source
// connections, by which the run finds its readers' backends.
const snapAppName = "tribench_snapshot"

func (b *Bench) repSnapshot(ctx context.Context, rep int, prefix string) error {
	s := b.src
	m := b.cfg.SnapRows
	have, _ := s.QueryVal(ctx, `SELECT count(*)::text FROM snap`)
	if have != strconv.Itoa(m) {
		logf("building the snapshot table of %d rows", m)
		if err := s.Exec(ctx, `DROP PUBLICATION IF EXISTS pub_snap`, `DROP TABLE IF EXISTS snap`,
			`CREATE TABLE snap `+tableDDL+` WITH (autovacuum_enabled = false)`,
			fmt.Sprintf(`INSERT INTO snap SELECT %s FROM generate_series(1, %d) g`, rowExpr("g"), m),
			`VACUUM (FREEZE, ANALYZE) snap`, `CHECKPOINT`,
			`CREATE PUBLICATION pub_snap FOR TABLE snap`); err != nil {
			return err
		}
	}
	_, _ = s.QueryVal(ctx, `SELECT count(*)::text FROM snap`) // warm the cache for every peer alike
	psql := filepath.Join(b.pgbin, "psql")
	conn := []string{psql, "-X", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "postgres", "-d", "postgres", "-c"}
	for _, x := range []struct{ peer, sql string }{
		{`psql \copy snap TO '/dev/null' (client side)`, `\copy snap TO '/dev/null'`},
		{`COPY snap TO '/dev/null' (server side)`, `COPY snap TO '/dev/null'`},
	} {
		r := newResult(rep, wSnapshot, x.peer, int64(m))
		args := append(append([]string{}, conn...), x.sql)
		r.Cmd = shellQuote(args)
		p, err := startProc("copy", b.root, b.logPath(fmt.Sprintf("copy-%d", rep)), nil, args...)
		if err != nil {
			b.add(r.fail("%v", err))
			continue
		}
		err = p.Wait(b.cfg.Timeout)
		r.Secs = p.End.Sub(p.Start).Seconds()
		r.CPU, r.RSSMB = p.Rusage()
		r.Load1 = loadavg()
		if err != nil {
			r.fail("%v: %s", err, p.Tail(5))
		}
		r.Note = "CPU and RSS are psql's"
		b.add(r)
	}
	slot := fmt.Sprintf("snap_%s", prefix)
	slot = strings.ToLower(strings.ReplaceAll(slot, "-", "_"))
	r := newResult(rep, wSnapshot, peerProducer+" --snapshot only", int64(m))
	args := append(b.producerArgs(prefix, slot, "pub_snap", "only"), b.producerExtra(fmt.Sprintf("snapshot-%d", rep))...)
	args[slices.Index(args, "--source")+1] = withParam(s.DSN, "application_name", snapAppName) // names the snapshot's readers
	r.Cmd = b.tributaryCmd(args)
	broker0 := b.kafka.mark()
	p, err := startProc("producer-snapshot", b.root, b.logPath(fmt.Sprintf("producer-snapshot-%d", rep)), b.tributaryEnv(), args...)
	if err != nil {
		b.add(r.fail("%v", err))
		return nil
	}
	readers := &pidSet{find: func() []int { return backends(ctx, s, snapAppName) }}
	perr := pollUntil(b.cfg.Timeout, e2ePollPeriod, func() (bool, error) {
		readers.sample()
		return p.Exited(), nil
	})
	if perr != nil {
		p.Kill() // timed out or interrupted: the error below says which
	}
	err = p.Wait(b.cfg.Timeout)
	if perr != nil {
		err = perr
	}
	r.Secs = p.End.Sub(p.Start).Seconds()
	r.CPU, r.RSSMB = p.Rusage()
	r.Load1 = loadavg()
	if err != nil {
		r.fail("%v: %s", err, p.Tail(15))
	}
	readers.sample()
	r.Parts = map[string]float64{partProducer: r.CPU, partSrcReader: readers.value()}
	b.kafka.addBrokerCPU(r.Parts, broker0)
	r.Note = "includes slot creation and the exported snapshot; default --snapshot-chunk-rows 50000, 2 readers"
	b.add(r)
	return b.dropSlots(ctx, slot)
}
