package retry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

func pg(code string) error { return &pgconn.PgError{Severity: "ERROR", Code: code, Message: "m"} }

func TestIsTerminal(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("apply: %w", err) }
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "kafka"}}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	for _, c := range []struct {
		name     string
		err      error
		terminal bool
	}{
		{"nil", nil, false},
		{"plain error", errors.New("something"), false},
		{"type lost with %v", fmt.Errorf("end offset: %v", kerr.TopicAuthorizationFailed), false},
		{"context canceled", context.Canceled, false},
		{"deadline", wrap(context.DeadlineExceeded), false},
		{"EOF", io.ErrUnexpectedEOF, false},
		{"dial", wrap(dial), false},
		{"connection reset", wrap(reset), false},
		{"closed kafka client", wrap(kgo.ErrClientClosed), false},

		{"marked", wrap(Terminal(errors.New("bad config"))), true},
		{"marked twice", Terminal(Terminal(errors.New("x"))), true},
		{"retryable over terminal", Retryable(wrap(Terminal(errors.New("x")))), false},
		{"terminal over retryable", Terminal(wrap(Retryable(errors.New("x")))), true},
		{"retryable over a fenced producer", Retryable(wrap(kerr.ProducerFenced)), false},
		{"retryable over a sqlstate", wrap(Retryable(pg("42P01"))), false},

		// The SQLSTATE table.
		{"admin shutdown 57P01", wrap(pg("57P01")), false},
		{"cannot connect now 57P03", pg("57P03"), false},
		{"query canceled 57014", pg("57014"), false},
		{"connection failure 08006", pg("08006"), false},
		{"serialization 40001", pg("40001"), false},
		{"deadlock 40P01", pg("40P01"), false},
		{"too many connections 53300", pg("53300"), false},
		{"disk full 53100", pg("53100"), false},
		{"io error 58030", pg("58030"), false},
		{"unique violation 23505", wrap(pg("23505")), true},
		{"undefined table 42P01", pg("42P01"), true},
		{"insufficient privilege 42501", pg("42501"), true},
		{"connect error without a server answer", &pgconn.ConnectError{Config: &pgconn.Config{}}, false},
		{"bad password inside a connect error", fmt.Errorf("connect: %w", pg("28P01")), true},
		{"no database 3D000", pg("3D000"), true},
		{"slot in use 55006", pg("55006"), true},
		{"invalid text 22P02", pg("22P02"), true},
		{"internal XX000", pg("XX000"), true},
		{"short code", pg("08"), true},

		// Kafka.
		{"not leader", wrap(kerr.NotLeaderForPartition), false},
		{"unknown topic", wrap(kerr.UnknownTopicOrPartition), false},
		{"coordinator loading", kerr.CoordinatorLoadInProgress, false},
		{"out of order sequence", wrap(kerr.OutOfOrderSequenceNumber), false},
		{"unknown producer id", kerr.UnknownProducerID, false},
		{"operation not attempted", kerr.OperationNotAttempted, false},
		{"invalid txn state", kerr.InvalidTxnState, false},
		{"concurrent transactions", kerr.ConcurrentTransactions, false},
		{"invalid producer id mapping", kerr.InvalidProducerIDMapping, false},
		{"transaction abortable", kerr.TransactionAbortable, false},
		{"fenced", wrap(kerr.ProducerFenced), true},
		{"old epoch", wrap(kerr.InvalidProducerEpoch), true},
		{"transactional id authorization", kerr.TransactionalIDAuthorizationFailed, true},
		{"topic authorization", wrap(kerr.TopicAuthorizationFailed), true},
		{"sasl", wrap(kerr.SaslAuthenticationFailed), true},
		{"record too large", kerr.MessageTooLarge, true},
		{"policy violation", kerr.PolicyViolation, true},

		// Certificates.
		{"unknown CA", wrap(x509.UnknownAuthorityError{}), true},
		{"wrong host", wrap(x509.HostnameError{Host: "h", Certificate: &x509.Certificate{}}), true},
		{"expired", x509.CertificateInvalidError{Reason: x509.Expired}, true},
		{"tls verification", wrap(&tls.CertificateVerificationError{Err: errors.New("x")}), true},

		// Schema registry.
		{"registry 500", wrap(&sr.ResponseError{StatusCode: 500}), false},
		{"registry 503", &sr.ResponseError{StatusCode: 503}, false},
		{"registry 429", &sr.ResponseError{StatusCode: 429}, false},
		{"registry 408", &sr.ResponseError{StatusCode: 408}, false},
		{"registry 401", wrap(&sr.ResponseError{StatusCode: 401}), true},
		{"registry 409 incompatible", &sr.ResponseError{StatusCode: 409}, true},
		{"registry 404", &sr.ResponseError{StatusCode: 404}, true},
	} {
		if got := IsTerminal(c.err); got != c.terminal {
			t.Errorf("%s: IsTerminal(%v) = %v, want %v", c.name, c.err, got, c.terminal)
		}
	}
}

// Every error franz-go itself retries against a broker is retried here too.
func TestBrokerErrorsAreRetried(t *testing.T) {
	for _, err := range []error{io.EOF, io.ErrUnexpectedEOF, net.ErrClosed,
		&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}} {
		if !kgo.IsRetryableBrokerErr(err) {
			t.Fatalf("%v: franz-go no longer retries it; pick another example", err)
		}
		if IsTerminal(fmt.Errorf("fetch: %w", err)) {
			t.Errorf("%v: franz-go retries it, IsTerminal says terminal", err)
		}
	}
	for _, err := range Fatal {
		if !IsTerminal(fmt.Errorf("produce: %w", err)) {
			t.Errorf("%v is not terminal", err)
		}
		if kerr.IsRetriable(err) {
			t.Errorf("%v: franz-go calls it retriable", err)
		}
	}
}

func TestMarksKeepMessageAndChain(t *testing.T) {
	base := fmt.Errorf("table t: %w", pg("23505"))
	for _, err := range []error{Terminal(base), Retryable(base)} {
		if err.Error() != base.Error() {
			t.Errorf("mark changed the message: %q", err)
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "23505" {
			t.Errorf("mark hides the chain: %v", err)
		}
	}
	if Terminal(nil) != nil || Retryable(nil) != nil {
		t.Error("a mark of nil is not nil")
	}
}

func TestTransientSQLState(t *testing.T) {
	for code, want := range map[string]bool{"08000": true, "08P01": true, "40001": true, "53200": true, "57P02": true,
		"58P01": true, "23503": false, "42703": false, "0A000": false, "": false, "5": false} {
		if got := TransientSQLState(code); got != want {
			t.Errorf("TransientSQLState(%q) = %v, want %v", code, got, want)
		}
	}
}
