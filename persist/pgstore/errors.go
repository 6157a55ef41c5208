package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tp0/loteria/persist"
)

// Errors of Open; match them with errors.Is.
var (
	ErrMismatch = errors.New("database belongs to another lottery")
	ErrCorrupt  = errors.New("database is inconsistent")
)

// transient reports whether err, from the driver, says the database could
// not be reached or could not do the work right now, rather than that the
// work itself was wrong: a broken or refused connection, a timeout, a
// server shutting down or restarting, too many connections, a deadlock or
// serialization failure. Retrying later may succeed.
func transient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		code := pgErr.Code
		switch {
		case strings.HasPrefix(code, "08"): // connection exception
			return true
		case strings.HasPrefix(code, "53"): // insufficient resources: disk full, out of memory, too many connections
			return true
		case strings.HasPrefix(code, "57P"): // admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped
			return code != "57P04"
		case code == "40001" || code == "40P01" || code == "55P03": // serialization failure, deadlock, lock not available
			return true
		case code == "57014": // query_canceled: statement_timeout, or an operator's pg_cancel_backend
			return true
		}
		return false
	}
	// The connection itself: refused, reset, closed under a query, or a
	// COMMIT whose answer never came.
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) || errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// classify wraps err, from step, with persist.ErrUnavailable when it is
// transient, so that the writer fails the requests without breaking the
// store and reloads before it plans again.
func classify(step string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, persist.ErrStale) || errors.Is(err, persist.ErrUnavailable) {
		return err
	}
	if transient(err) {
		return fmt.Errorf("%w: %s: %w", persist.ErrUnavailable, step, err)
	}
	return fmt.Errorf("%s: %w", step, err)
}
