package conflict

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Kind is what was detected.
type Kind string

// The kinds of conflicts.
const (
	KindInsertExists  Kind = "insert-exists"  // an insert whose key exists, with other values
	KindUpdateDiffers Kind = "update-differs" // an update whose before-image differs from the local row
	KindUpdateMissing Kind = "update-missing" // an update whose row is missing
	KindDeleteDiffers Kind = "delete-differs" // a delete whose before-image differs from the local row
	KindDeleteMissing Kind = "delete-missing" // a delete whose row is missing
	KindOwnership     Kind = "ownership"      // a change from a site that does not own the row
)

// Outcome is what the resolution did.
type Outcome string

// The outcomes.
const (
	OutcomeRemote   Outcome = "applied-remote" // the remote values were written
	OutcomeLocal    Outcome = "kept-local"     // the local values were kept
	OutcomeMerged   Outcome = "merged"         // values computed from both (additive, min/max, custom)
	OutcomeSkipped  Outcome = "skipped"        // the change was not applied (row missing)
	OutcomeDeleted  Outcome = "deleted"        // the row was deleted
	OutcomeInserted Outcome = "inserted"       // the missing row was inserted from the after-image
	OutcomeRejected Outcome = "rejected"       // an ownership violation: not applied
	OutcomeStopped  Outcome = "stopped"        // method error: the consumer stopped
)

// Row is a row as canonical PostgreSQL text values by column name; a nil
// value is NULL.
type Row map[string]*string

// Record is one detected conflict or ownership violation, as written to
// tributary_conflicts, the conflicts topic (Avro, conflict.avsc) and the
// webhook (JSON).
type Record struct {
	// ID is the row's id in tributary_conflicts at the detecting site.
	ID           int64     `json:"id"`
	DetectedAt   time.Time `json:"detected_at"`
	Site         string    `json:"site"`        // where it was detected
	RemoteSite   string    `json:"remote_site"` // where the change was made
	Consumer     string    `json:"consumer"`
	Table        string    `json:"table"` // schema.table
	Key          Row       `json:"key"`
	Kind         Kind      `json:"kind"`
	Group        string    `json:"group"` // column group; "" for ownership and whole-row kinds
	Method       Method    `json:"method"`
	Outcome      Outcome   `json:"outcome"`
	Local        Row       `json:"local,omitempty"`
	RemoteBefore Row       `json:"remote_before,omitempty"`
	RemoteAfter  Row       `json:"remote_after,omitempty"`
	Resolved     Row       `json:"resolved,omitempty"`
	CommitLSN    string    `json:"commit_lsn"`
	Xid          uint32    `json:"xid"`
	CommitTime   time.Time `json:"remote_commit_time"`
	// LocalSite and LocalCommitTime say who wrote the local values of the
	// group and when, as the methods saw it (empty for whole-row kinds).
	LocalSite       string    `json:"local_site,omitempty"`
	LocalCommitTime time.Time `json:"local_commit_time,omitzero"`
	Detail          string    `json:"detail,omitempty"`
}

// Notifier receives records after the target transaction that recorded them
// has committed (and records of method error before the consumer stops).
// Notify is called from one goroutine at a time and may block; it should
// give up at ctx's end. Delivery is at most once: a record is not resent
// when Notify fails or the process dies. (The conflicts topic is not a
// Notifier: Config.Outbox publishes it from tributary_conflicts, exactly
// once.)
type Notifier interface {
	Notify(ctx context.Context, recs []Record) error
}

// WebhookNotifier POSTs each batch of records as a JSON array to URL.
type WebhookNotifier struct {
	URL    string
	Client *http.Client // nil: a client with a 10-second timeout
}

// Notify posts recs; a status other than 2xx is an error.
func (w *WebhookNotifier) Notify(ctx context.Context, recs []Record) error {
	body, err := json.Marshal(recs)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	cl := w.Client
	if cl == nil {
		cl = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s: %s", w.URL, resp.Status)
	}
	return nil
}

// dispatcher hands records to the notifiers on its own goroutine, so that a
// slow webhook never holds up the apply. Its queue is bounded: when it is
// full, records are dropped for the notifiers (and counted in the log); the
// tributary_conflicts table always has them.
type dispatcher struct {
	log       *slog.Logger
	notifiers []Notifier
	ch        chan []Record
	done      chan struct{}
	closeOnce sync.Once
}

func newDispatcher(log *slog.Logger, ns []Notifier) *dispatcher {
	d := &dispatcher{log: log, notifiers: ns, ch: make(chan []Record, 256), done: make(chan struct{})}
	go d.run()
	return d
}

func (d *dispatcher) run() {
	defer close(d.done)
	for recs := range d.ch {
		for _, n := range d.notifiers {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			if err := n.Notify(ctx, recs); err != nil {
				d.log.Warn("conflict notification failed; the records stay in tributary_conflicts",
					"notifier", fmt.Sprintf("%T", n), "records", len(recs), "err", err)
			}
			cancel()
		}
	}
}

func (d *dispatcher) send(recs []Record) {
	if len(d.notifiers) == 0 || len(recs) == 0 {
		return
	}
	select {
	case d.ch <- recs:
	default:
		d.log.Warn("conflict notification queue full; records dropped for notifiers (they stay in tributary_conflicts)",
			"records", len(recs))
	}
}

// close delivers what is queued, waiting at most until ctx ends.
func (d *dispatcher) close(ctx context.Context) {
	d.closeOnce.Do(func() { close(d.ch) })
	select {
	case <-d.done:
	case <-ctx.Done():
	}
}
