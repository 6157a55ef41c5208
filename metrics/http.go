package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/tp0/loteria/internal/logging"
)

// HTTP server limits: a slow or idle client cannot hold a connection long,
// and a scrape or check is never cut off by a draining server too early.
const (
	readHeaderTimeout = 5 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	shutdownTimeout   = 5 * time.Second
	maxHeaderBytes    = 16 << 10
)

// Health holds the checks behind /healthz (Live) and /readyz (Ready). Each
// answers nil when healthy; a nil func is always healthy. They are called
// from HTTP goroutines, so they must be safe for concurrent use.
type Health struct {
	Live  func() error
	Ready func() error
}

// Handler serves reg at /metrics, Live at /healthz and Ready at /readyz;
// scrape failures are counted in reg as promhttp_metric_handler_errors_total.
func Handler(reg *prometheus.Registry, health Health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("GET /healthz", check(health.Live))
	mux.Handle("GET /readyz", check(health.Ready))
	return mux
}

// check answers 200 "ok" when fn returns nil and 503 with the error's text
// otherwise.
func check(fn func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if fn != nil {
			if err := fn(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, err.Error()+"\n")
				return
			}
		}
		_, _ = io.WriteString(w, "ok\n")
	}
}

// Serve listens on addr (port 0 picks a free port) and serves h there until
// ctx is cancelled, then shuts down gracefully. A listen error is returned at
// once, so the caller can refuse to start. boundAddr is the address actually
// listened on; wait blocks until the server has stopped and returns why, nil
// after a clean shutdown.
func Serve(ctx context.Context, addr string, h http.Handler, log *zap.Logger) (boundAddr string, wait func() error, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("metrics_listen", logging.Fail, zap.String("address", addr), zap.Error(err))
		return "", nil, fmt.Errorf("metrics listen on %s: %w", addr, err)
	}
	boundAddr = ln.Addr().String()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          stdlog.New(httpErrorLog{log}, "", 0),
	}
	log.Info("metrics_listen", logging.Success, zap.String("address", boundAddr))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	done := make(chan error, 1)
	go func() { done <- run(ctx, srv, served, log) }()
	return boundAddr, sync.OnceValue(func() error { return <-done }), nil
}

// run waits for the server to fail or for ctx to end, shuts it down in the
// second case, logs how it stopped and returns the first error.
func run(ctx context.Context, srv *http.Server, served <-chan error, log *zap.Logger) error {
	var err error
	select {
	case serr := <-served:
		err = fmt.Errorf("metrics serve: %w", serr)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		if serr := srv.Shutdown(sctx); serr != nil {
			err = fmt.Errorf("metrics shutdown: %w", serr)
			if cerr := srv.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("metrics close: %w", cerr))
			}
		}
		cancel()
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
			err = fmt.Errorf("metrics serve: %w", serr)
		}
	}
	if err != nil {
		log.Error("metrics_shutdown", logging.Fail, zap.Error(err))
		return err
	}
	log.Info("metrics_shutdown", logging.Success)
	return nil
}

// httpErrorLog turns net/http's error lines (a bad request it refused, a
// failed accept) into metrics_http fail lines of the log contract.
type httpErrorLog struct{ log *zap.Logger }

func (h httpErrorLog) Write(p []byte) (int, error) {
	h.log.Warn("metrics_http", logging.Fail, zap.String("error", strings.TrimSpace(string(p))))
	return len(p), nil
}
