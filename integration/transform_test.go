package integration

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres"
	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/transform"
)

// peopleTransforms is the branch-site mapping of issue 5: people of region NE
// become contacts, with the name split, the address combined, the SSN hashed
// and the birth time reduced to a date.
const peopleTransforms = `
tables:
  public.people:
    to: contacts
    steps:
      - filter: region == 'NE'
      - split: {column: full_name, separator: " ", into: [first_name, last_name]}
      - combine: {columns: [street, city, zip], into: address, separator: ", "}
      - hash: {column: ssn, into: ssn_hash, salt_env: TRIBUTARY_TEST_SSN_SALT}
      - convert: {column: born_at, to: date, into: born_on}
      - drop: [region]
`

// runTransformConsumer applies everything committed so far into target
// through the pipeline and returns Run's error.
func runTransformConsumer(t *testing.T, e *env, target *harness.Postgres, name string, p *transform.Pipeline, onError consumer.OnError) error {
	t.Helper()
	sink, err := postgres.New(postgres.Config{DSN: target.DSN, Consumer: name, CreateTables: true, Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := consumer.New(consumer.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(e.kafka.Brokers...)}, Registry: e.reg,
		Prefix: e.prefix, Name: name, Sink: sink, Transform: p, OnError: onError, UntilCaughtUp: true,
		RetryMaxElapsed: 20 * time.Second, Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return c.Run(ctx)
}

// expectedContacts maps the source's people rows to the contacts rows the
// target must hold, computed independently of the transform package.
func expectedContacts(t *testing.T, src *harness.Postgres, salt string) []string {
	t.Helper()
	rows, err := src.Conn(t).Query(context.Background(), `SELECT id, full_name, street, city, zip, ssn,
		(born_at AT TIME ZONE 'UTC')::date::text FROM people WHERE region = 'NE' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id int
		var name, street, city, zip, ssn, born *string
		if err := rows.Scan(&id, &name, &street, &city, &zip, &ssn, &born); err != nil {
			t.Fatal(err)
		}
		first, last := nullStr(nil), nullStr(nil)
		if name != nil {
			f, l, ok := strings.Cut(*name, " ")
			first = f
			if ok {
				last = strings.TrimSpace(l)
			}
		}
		var parts []string
		for _, p := range []*string{street, city, zip} {
			if p != nil {
				parts = append(parts, *p)
			}
		}
		addr := nullStr(nil)
		if len(parts) > 0 {
			addr = strings.Join(parts, ", ")
		}
		hash := nullStr(nil)
		if ssn != nil {
			m := hmac.New(sha256.New, []byte(salt))
			m.Write([]byte(*ssn))
			hash = hex.EncodeToString(m.Sum(nil))
		}
		out = append(out, fmt.Sprintf("%d|%s|%s|%s|%s|%s", id, first, last, addr, hash, nullStr(born)))
	}
	return out
}

func nullStr(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}

func contactsDump(t *testing.T, target *harness.Postgres) []string {
	t.Helper()
	rows, err := target.Conn(t).Query(context.Background(), `SELECT id, first_name, last_name, address, ssn_hash, born_on::text
		FROM contacts ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id int
		var f, l, a, h, b *string
		if err := rows.Scan(&id, &f, &l, &a, &h, &b); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d|%s|%s|%s|%s|%s", id, nullStr(f), nullStr(l), nullStr(a), nullStr(h), nullStr(b)))
	}
	return out
}

func execEach(t *testing.T, c *pgx.Conn, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := c.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// TestTransformPeopleToContactsForOneRegion is the branch-site test of issue
// 5: the real producer captures people; a consumer with a transform pipeline
// keeps region NE only, reshapes the rows into contacts (a table it creates
// from the transformed schema), and follows updates that move rows into and
// out of the region, and deletes.
func TestTransformPeopleToContactsForOneRegion(t *testing.T) {
	const salt = "branch-ne-salt"
	t.Setenv("TRIBUTARY_TEST_SSN_SALT", salt)
	e := newEnv(t)
	target := harness.StartPostgres(t)
	e.pg.Exec(t,
		`CREATE TABLE people (id int PRIMARY KEY, full_name text, street text, city text, zip text, ssn text,
			region text, born_at timestamptz)`,
		// The filter decides moves in and out from the before image, as
		// PostgreSQL's own publication row filters do.
		`ALTER TABLE people REPLICA IDENTITY FULL`,
		`CREATE PUBLICATION pub FOR TABLE people`)
	p, err := transform.ParseConfig([]byte(peopleTransforms), "people.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := transform.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	e.runProducer(t, e.producerConfig(t))
	c := e.pg.Conn(t)
	frames := 0
	tx := func(stmts ...string) {
		execEach(t, c, append(append([]string{"BEGIN"}, stmts...), "COMMIT")...)
		frames++
	}
	tx(`INSERT INTO people VALUES
		(1, 'Ada Lovelace', '12 St James Sq', 'Boston', '02101', '111-11-1111', 'NE', '1815-12-10 23:30:00-05'),
		(2, 'Alan Turing', '2 Kings Pde', 'Albany', '12207', '222-22-2222', 'SW', '1912-06-23 12:00:00+00'),
		(3, 'Grace Brewster Hopper', NULL, 'Hartford', NULL, NULL, 'NE', '1906-12-09 00:00:00+00'),
		(4, NULL, NULL, NULL, NULL, '444-44-4444', 'NE', NULL),
		(5, 'Edsger Dijkstra', '5 Rotterdam Rd', 'Austin', '78701', '555-55-5555', 'SW', '1930-05-11 08:00:00+00'),
		(6, 'Barbara Liskov', '6 Main St', 'Portland', '04101', '666-66-6666', NULL, '1939-11-07 08:00:00+00')`)
	tx(`INSERT INTO people VALUES (7, 'Donald Knuth', '7 Stanford Ave', 'Providence', '02903', '777-77-7777', 'NE', '1938-01-10 08:00:00+00')`)
	e.waitFrameCount(t, frames)
	// Start-up check against the registry's schema: this file fits, a typo does not.
	lookup := transform.RegistryLookup(e.reg, e.prefix)
	if err := pipe.Check(context.Background(), lookup); err != nil {
		t.Fatal(err)
	}
	typo, err := transform.ParseConfig([]byte(strings.Replace(peopleTransforms, "region == 'NE'", "regoin == 'NE'", 1)), "typo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	typoPipe, err := transform.Compile(typo)
	if err != nil {
		t.Fatal(err)
	}
	if err := typoPipe.Check(context.Background(), lookup); err == nil || !strings.Contains(err.Error(), "undeclared reference to 'regoin'") ||
		!strings.Contains(err.Error(), "typo.yaml line 6") {
		t.Fatalf("a typo in a filter passed the start-up check: %v", err)
	}
	if err := runTransformConsumer(t, e, target, "ne-branch", pipe, consumer.OnErrorStop); err != nil {
		t.Fatal(err)
	}
	if got, want := contactsDump(t, target), expectedContacts(t, e.pg, salt); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the inserts, contacts differ:\n got %q\nwant %q", got, want)
	}
	tx(`UPDATE people SET region = 'SW' WHERE id = 1`, // moves out: deleted at the target
		`UPDATE people SET region = 'NE', city = 'Nashua' WHERE id = 2`,            // moves in: inserted
		`UPDATE people SET full_name = 'Grace Hopper', zip = '06103' WHERE id = 3`) // stays in: updated
	tx(`UPDATE people SET full_name = 'E. W. Dijkstra' WHERE id = 5`)                                  // stays out: dropped
	tx(`DELETE FROM people WHERE id = 7`)                                                              // in: deleted
	tx(`DELETE FROM people WHERE id = 6`)                                                              // out (NULL region): dropped
	tx(`UPDATE people SET region = 'NE' WHERE id = 5`, `UPDATE people SET region = 'SW' WHERE id = 5`) // in and out in one transaction
	tx(`UPDATE people SET region = 'NE' WHERE id = 1`, `UPDATE people SET ssn = NULL WHERE id = 1`)    // back in, then changed
	tx(`INSERT INTO people VALUES (8, 'Ken Thompson', '8 Bell Rd', 'Concord', '03301', '888-88-8888', 'NE', '1943-02-04 08:00:00+00')`,
		`UPDATE people SET born_at = '1943-02-04 23:59:59-08' WHERE id = 8`)
	e.waitFrameCount(t, frames)
	if err := runTransformConsumer(t, e, target, "ne-branch", pipe, consumer.OnErrorStop); err != nil {
		t.Fatal(err)
	}
	got, want := contactsDump(t, target), expectedContacts(t, e.pg, salt)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("contacts differ from the mapping of people:\n got %q\nwant %q", got, want)
	}
	// The target table was created from the transformed schema.
	var cols string
	target.Conn(t).QueryRow(context.Background(), `SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
		FROM information_schema.columns WHERE table_name = 'contacts'`).Scan(&cols)
	if cols != "id integer, first_name text, last_name text, address text, ssn_hash text, born_on date" {
		t.Fatalf("contacts columns: %s", cols)
	}
	t.Logf("contacts: %q", got)
}

// TestTransformBadValueFollowsOnError converts a text column to integer; the
// row holding 'abc' stops the consumer with an error naming the table, the
// column, the step and the key, and under the dead-letter policy it is
// dead-lettered while the other rows are applied.
func TestTransformBadValueFollowsOnError(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	e.pg.Exec(t, `CREATE TABLE items (id int PRIMARY KEY, qty text)`, `CREATE PUBLICATION pub FOR TABLE items`)
	cfg, err := transform.ParseConfig([]byte(`
tables:
  items:
    steps:
      - convert: {column: qty, to: integer}
`), "items.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := transform.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.runProducer(t, e.producerConfig(t))
	c := e.pg.Conn(t)
	execEach(t, c, `INSERT INTO items VALUES (1, '5')`, `INSERT INTO items VALUES (2, 'abc')`, `INSERT INTO items VALUES (3, ' 7 ')`)
	e.waitFrameCount(t, 3)

	err = runTransformConsumer(t, e, target, "items", pipe, consumer.OnErrorStop)
	if err == nil {
		t.Fatal("consumer applied 'abc' as an integer")
	}
	for _, want := range []string{"public.items", `column "qty"`, `"convert"`, "items.yaml line", "(id)=(2)", `"abc"`, "integer"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	var n int64
	target.Conn(t).QueryRow(context.Background(), `SELECT count(*) FROM items`).Scan(&n)
	if n != 1 {
		t.Fatalf("%d rows applied before the stop, want 1 (the transaction before the bad one)", n)
	}
	// Stop resumes at the same place: same error again.
	if err2 := runTransformConsumer(t, e, target, "items", pipe, consumer.OnErrorStop); err2 == nil || !strings.Contains(err2.Error(), "(id)=(2)") {
		t.Fatalf("second run: %v", err2)
	}
	if err := runTransformConsumer(t, e, target, "items", pipe, consumer.OnErrorDeadLetter); err != nil {
		t.Fatalf("dead-letter run: %v", err)
	}
	got := tableDump(t, target, "items")
	if fmt.Sprint(got) != "[(1,5) (3,7)]" {
		t.Fatalf("items after dead-lettering: %v", got)
	}
	cl := e.kafka.Client(t, kgo.ConsumeTopics(schemas.DeadLetterTopic(e.prefix, "items")), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < 2 && ctx.Err() == nil {
		recs = append(recs, cl.PollFetches(ctx).Records()...)
	}
	if len(recs) != 2 {
		t.Fatalf("dead-letter topic has %d records; want the bad insert and its frame", len(recs))
	}
	for _, h := range recs[0].Headers {
		if h.Key == consumer.HeaderDLQReason && !strings.Contains(string(h.Value), `column "qty"`) {
			t.Errorf("dead-letter reason does not name the column: %s", h.Value)
		}
	}
}
