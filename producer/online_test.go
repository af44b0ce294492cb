package producer

import "testing"

// A chunk's read sees exactly the transactions its snapshot sees: below
// xmin, or below xmax and not running; xids compare modulo 2^32, and xid8
// text carries the epoch above them.
func TestSnapshotSees(t *testing.T) {
	s, err := parseSnapshot("4294967390", "4294967400", []string{"4294967392", "4294967395"}) // epoch 1: xmin 94, xmax 104, running 96 and 99
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		xid  uint32
		sees bool
	}{{93, true}, {94, true}, {92, true}, {95, true}, {96, false}, {99, false}, {97, true}, {100, true}, {103, true}, {104, false}, {105, false}} {
		x := c.xid
		if got := s.sees(x); got != c.sees {
			t.Errorf("sees(%d) = %v, want %v (xmin 94, xmax 104, xip 96 99)", x, got, c.sees)
		}
	}
	// Around the 32-bit wrap: xmin 2^32-3, xmax 5, running 2^32-1 and 1.
	w, err := parseSnapshot("8589934589", "8589934597", []string{"8589934591", "8589934593"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		xid  uint32
		sees bool
	}{{4294967290, true}, {4294967293, true}, {4294967294, true}, {4294967295, false}, {0, true}, {1, false}, {4, true}, {5, false}, {100, false}} {
		if got := w.sees(c.xid); got != c.sees {
			t.Errorf("across the wrap: sees(%d) = %v, want %v", c.xid, got, c.sees)
		}
	}
	if _, err := parseSnapshot("x", "1", nil); err == nil {
		t.Fatal("parseSnapshot accepted a bad xmin")
	}
}

// The ring of recent transactions returns, oldest first, the xids that
// changed a table, and forgets beyond its size.
func TestRecentTransactions(t *testing.T) {
	o := &online{}
	for i := 0; i < recentTxns+10; i++ {
		tables := []string{"public.a"}
		if i%2 == 0 {
			tables = append(tables, "public.b")
		}
		o.noteTxn(uint32(i), tables)
	}
	a := o.recentFor("public.a")
	if len(a) != recentTxns || a[0] != 10 || a[len(a)-1] != recentTxns+9 {
		t.Fatalf("recentFor(a) = %d xids from %d to %d", len(a), a[0], a[len(a)-1])
	}
	if b := o.recentFor("public.b"); len(b) != recentTxns/2 || b[0]%2 != 0 {
		t.Fatalf("recentFor(b) = %v", b)
	}
	if c := o.recentFor("public.c"); len(c) != 0 {
		t.Fatalf("recentFor(c) = %v", c)
	}
}
