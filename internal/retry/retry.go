// Package retry is Tributary's one rule for errors: retry unless terminal.
//
// A long-running part (the producer's replication sessions, the consumer's
// apply sessions) retries every error with exponential backoff, bounded by
// its configured MaxElapsedTime, except a terminal one, which stops it at
// once. An error is terminal when
//
//   - it, or an error it wraps, is marked with Terminal (the explicit marks
//     for what only a person can fix: bad configuration, bad input that the
//     policy says stops, a second producer on the same slot);
//   - it is a PostgreSQL error whose SQLSTATE is not in the transient table
//     (TransientSQLState): the server said what is wrong, and saying it again
//     will not change it;
//   - it is a Kafka error that franz-go does not call retriable
//     (kerr.IsRetriable), except the few that say the client's producer
//     state is broken, which a new client repairs (ProducerStateBroken); a
//     fenced producer and an authorization failure are among the terminal
//     ones (Fatal);
//   - it is a certificate that does not verify (x509 and TLS verification
//     errors), for PostgreSQL or Kafka;
//   - it is a schema registry answer 4xx other than 408 and 429.
//
// Every other error is retried: a network error, an EOF, a timeout, a
// closed client, and also an error whose type was lost on the way (formatted
// with %v, or a kind this package does not know). Losing a type costs a
// bounded retry, never a fatal stop by accident (CockroachDB's changefeeds
// follow the same rule, changefeedbase.WithTerminalError).
//
// Retryable marks the opposite: an error that is retried whatever it wraps
// (a Kafka client replaced after a timeout, whatever error it ended with).
// When marks are nested, the outermost one decides. Context errors are never
// terminal; callers check their own context first.
//
// Everything here is a pure function of the error; safe for concurrent use.
package retry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/sr"
)

// mark is a judgement attached to an error by Terminal or Retryable.
type mark struct {
	err      error
	terminal bool
}

func (m *mark) Error() string { return m.err.Error() }
func (m *mark) Unwrap() error { return m.err }

// Terminal marks err as terminal: IsTerminal reports true for it and for
// every error that wraps it, unless a Retryable mark wraps it in turn.
// Terminal(nil) is nil. The message is err's, unchanged.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return &mark{err: err, terminal: true}
}

// Retryable marks err as retryable whatever it wraps: IsTerminal reports
// false for it and for every error that wraps it, unless a Terminal mark
// wraps it in turn. Retryable(nil) is nil. The message is err's, unchanged.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &mark{err: err, terminal: false}
}

// IsTerminal reports whether retrying err is pointless (see the package
// comment for the rule). IsTerminal(nil) is false.
func IsTerminal(err error) bool {
	if err == nil {
		return false
	}
	// The outermost mark decides: errors.As walks the tree from the top.
	var m *mark
	if errors.As(err, &m) {
		return m.terminal
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return !TransientSQLState(pe.Code)
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return !kerr.IsRetriable(ke) && !ProducerStateBroken(ke)
	}
	if certificateError(err) {
		return true
	}
	var re *sr.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode >= 400 && re.StatusCode < 500 && re.StatusCode != 408 && re.StatusCode != 429
	}
	return false
}

// transientClasses are the SQLSTATE classes (the first two characters) of
// errors that a later attempt can succeed past.
var transientClasses = map[string]bool{
	"08": true, // connection exception
	"40": true, // transaction rollback: serialization failure, deadlock
	"53": true, // insufficient resources: too many connections, out of memory or disk
	"57": true, // operator intervention: shutdown, crash, query canceled, cannot connect now
	"58": true, // system error: I/O errors outside PostgreSQL
}

// TransientSQLState reports whether a PostgreSQL error with SQLSTATE code is
// worth retrying. It is the one SQLSTATE table of Tributary: the producer
// (source errors) and every PostgreSQL sink (target errors) judge by it.
// Every other class (data exceptions, constraint violations, undefined or
// forbidden objects, authorization, an object in use such as a replication
// slot another process holds) is terminal.
func TransientSQLState(code string) bool {
	return len(code) == 5 && transientClasses[code[:2]]
}

// ProducerStateBroken reports whether err is a Kafka error saying that the
// client's transactional producer state is broken (a sequence gap after a
// broker restart, a transaction the coordinator timed out or asks to abort,
// an EndTxn the broker did not attempt): not retriable by the same client,
// but a new client gets a new epoch and resumes from the durable state.
func ProducerStateBroken(err error) bool {
	for _, e := range producerState {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

var producerState = []error{
	kerr.InvalidTxnState, kerr.ConcurrentTransactions, kerr.OutOfOrderSequenceNumber, kerr.UnknownProducerID,
	kerr.InvalidProducerIDMapping, kerr.OperationNotAttempted, kerr.TransactionAbortable,
}

// Fatal lists the Kafka errors that must stop a producer or consumer, for
// documentation and tests: another producer owns the transactional ID
// (fenced), or the credentials or ACLs do not allow the operation. None is
// retriable by kerr.IsRetriable, so IsTerminal already reports them.
var Fatal = []error{
	kerr.ProducerFenced, kerr.InvalidProducerEpoch, kerr.TransactionalIDAuthorizationFailed,
	kerr.TopicAuthorizationFailed, kerr.GroupAuthorizationFailed, kerr.ClusterAuthorizationFailed,
	kerr.SaslAuthenticationFailed, kerr.UnsupportedSaslMechanism, kerr.DelegationTokenAuthorizationFailed,
}

// certificateError reports a certificate that does not verify: it stays
// wrong until someone fixes the CA, the certificate or the host name.
func certificateError(err error) bool {
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &invalid) || errors.As(err, &verify)
}
