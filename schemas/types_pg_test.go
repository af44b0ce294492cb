package schemas

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// tcPGBin is where Debian's postgresql-15 package installs the server.
const tcPGBin = "/usr/lib/postgresql/15/bin"

// tcStartPG starts a throw-away PostgreSQL cluster on a free loopback port and
// returns a connection with the producer's session settings. It fails the
// test (it does not skip) when the server binaries are missing. As root it
// runs the server as the postgres OS user, since PostgreSQL refuses root.
func tcStartPG(t *testing.T) *pgx.Conn {
	t.Helper()
	if _, err := os.Stat(filepath.Join(tcPGBin, "initdb")); err != nil {
		t.Fatalf("PostgreSQL 15 server binaries are required: %v", err)
	}
	dir, err := os.MkdirTemp("", "tributary-schemas-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var asUser []string
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs a postgres OS user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	run := func(args ...string) {
		t.Helper()
		args = append(append([]string{}, asUser...), args...)
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	data := filepath.Join(dir, "data")
	run(filepath.Join(tcPGBin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
	run(filepath.Join(tcPGBin, "pg_ctl"), "-D", data, "-w", "-l", filepath.Join(dir, "log"),
		"-o", fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s -c fsync=off", port, dir), "start")
	t.Cleanup(func() {
		args := append(append([]string{}, asUser...), filepath.Join(tcPGBin, "pg_ctl"), "-D", data, "-m", "immediate", "stop")
		_ = exec.Command(args[0], args[1:]...).Run()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	for _, q := range []string{
		"SET DateStyle = 'ISO, MDY'",
		"SET IntervalStyle = iso_8601",
		"SET TimeZone = 'UTC'",
		"SET extra_float_digits = 3",
		"SET bytea_output = hex",
		"CREATE TYPE mood AS ENUM ('happy', 'sad')",
		"CREATE DOMAIN posint AS int4 CHECK (VALUE > 0)",
		"CREATE DOMAIN price AS numeric(10,2)",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return conn
}

// tcPGText returns PostgreSQL's output-function text (what pgoutput sends) of
// the literal lit cast to typ. A ::text cast is not the same: it strips
// bpchar's padding, spells bool as true/false and adds inet's /128.
func tcPGText(ctx context.Context, conn *pgx.Conn, lit, typ string) (string, error) {
	q := "SELECT '" + strings.ReplaceAll(lit, "'", "''") + "'::" + typ
	rows, err := conn.Query(ctx, q, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var s string
	n := 0
	for rows.Next() {
		s = string(rows.RawValues()[0])
		n++
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	if n != 1 {
		return "", fmt.Errorf("%d rows", n)
	}
	return s, nil
}

// TestMapTypeAgainstPostgreSQL checks every table case against a real
// server: the table's text is what PostgreSQL prints, Decode accepts it, and
// the literal Encode makes from what goavro decodes reads back to the same
// text.
func TestMapTypeAgainstPostgreSQL(t *testing.T) {
	conn := tcStartPG(t)
	ctx := context.Background()
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tcCases {
		t.Run(tc.String(), func(t *testing.T) {
			if tc.sql == "interval" && tc.in == "infinity" && version < 170000 {
				t.Skipf("infinite intervals need PostgreSQL 17, server is %d", version)
			}
			pgText, err := tcPGText(ctx, conn, tc.in, tc.sql)
			if err != nil {
				t.Fatalf("PostgreSQL rejects the case: %v", err)
			}
			canon := tc.in
			if tc.out != "" {
				canon = tc.out
			}
			if tc.err == nil && pgText != canon {
				t.Errorf("PostgreSQL prints %q, the table expects %q", pgText, canon)
			}
			c, err := MapType(tc.t, tc.typmod, UnsupportedFail)
			if err != nil {
				t.Fatal(err)
			}
			_, lit, _, err := tcRoundTrip(tcAvroCodec(t, c), c, pgText)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("PostgreSQL text %q: err = %v, want %v", pgText, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			back, err := tcPGText(ctx, conn, lit, tc.sql)
			if err != nil {
				t.Fatalf("PostgreSQL rejects Encode's literal %q: %v", lit, err)
			}
			if back != pgText {
				t.Errorf("'%s'::%s prints %q, want %q", lit, tc.sql, back, pgText)
			}
		})
	}
	// Values generated by PostgreSQL itself, including every float4 bit
	// pattern class and random intervals, go through the same round trip.
	gen := []struct {
		t    PGType
		sql  string
		expr string
	}{
		{tcFloat8, "float8", "SELECT (random()*10^(random()*600-300))::float8::text FROM generate_series(1,300)"},
		{tcFloat4, "float4", "SELECT (random()*10^(random()*70-35))::float4::text FROM generate_series(1,300)"},
		{tcInterval, "interval", "SELECT make_interval(years=>(random()*2000-1000)::int, months=>(random()*24-12)::int, days=>(random()*2000-1000)::int, hours=>(random()*2000-1000)::int, mins=>(random()*200-100)::int, secs=>(random()*200-100)::numeric(10,6)::float8)::text FROM generate_series(1,300)"},
		{tcTSTZ, "timestamptz", "SELECT (timestamptz 'epoch' + (random()*9.4e12 - 2.1e11)::bigint * interval '1 second' + (random()*1e6)::int * interval '1 microsecond')::text FROM generate_series(1,300)"},
		{tcTS, "timestamp", "SELECT (timestamp 'epoch' + (random()*9.4e12 - 2.1e11)::bigint * interval '1 second' + (random()*1e6)::int * interval '1 microsecond')::text FROM generate_series(1,300)"},
		{tcDate, "date", "SELECT (date '4713-01-01 BC' + (random()*2000000000)::int)::text FROM generate_series(1,300)"},
		{tcTime, "time", "SELECT (time '00:00' + random() * interval '24 hours')::text FROM generate_series(1,300)"},
		{tcArr(tcText), "text[]", `SELECT array_agg(x)::text FROM (SELECT chr(32+(random()*100)::int) || CASE WHEN random() < 0.3 THEN '"' ELSE ' ' END || chr(92) AS x FROM generate_series(1,20)) s`},
	}
	for _, g := range gen {
		c, err := MapType(g.t, -1, UnsupportedFail)
		if err != nil {
			t.Fatal(err)
		}
		ac := tcAvroCodec(t, c)
		rows, err := conn.Query(ctx, g.expr, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatal(err)
		}
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, pgText := range texts {
			_, lit, _, err := tcRoundTrip(ac, c, pgText)
			if err != nil {
				t.Errorf("%s %q: %v", g.sql, pgText, err)
				continue
			}
			back, err := tcPGText(ctx, conn, lit, g.sql)
			if err != nil || back != pgText {
				t.Errorf("%s %q: literal %q prints %q, %v", g.sql, pgText, lit, back, err)
			}
		}
	}
}
