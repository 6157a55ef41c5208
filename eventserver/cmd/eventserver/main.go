// Command eventserver runs the lottery's central server.
//
// Settings come from flags, then SERVER_* environment variables, then the
// YAML file named by --config, then defaults. Bad settings exit with status
// 2; a server that cannot start, or whose store fails, exits with status 1
// so that its supervisor restarts it and recovery runs. With --store
// postgres://..., a database that cannot be reached for a while is not a
// failure: batches are answered ERROR storage (agencies retry), /readyz
// fails, and the server carries on once the database is back.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/internal/config"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/internal/shutdown"
	"github.com/tp0/loteria/metrics"
)

func main() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv, shutdown.Notify(), hup))
}

// run is the whole program; the first signal on sigs starts a graceful
// drain, and a second one kills the process the default way. A signal on
// hup re-reads the agencies' public keys.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) (string, bool),
	sigs, hup <-chan os.Signal) int {
	cfg, err := eventserver.LoadConfig("eventserver", args, stdout, env)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "eventserver: %v\n", err)
		return 2
	}
	log := cfg.Logger
	defer log.Sync()
	var m *metrics.Lottery
	if cfg.MetricsListen != "" {
		m = metrics.New(cfg.Agencies)
		cfg.Observer = m
	}
	var started atomic.Pointer[eventserver.Server] // set once recovery is done
	health := metrics.Health{
		Live: func() error {
			srv := started.Load()
			if srv == nil {
				return nil // recovering: alive, not ready
			}
			select {
			case <-srv.Ready():
			default:
				return nil
			}
			return srv.Stuck(time.Now(), 5*time.Second)
		},
		Ready: func() error { return ready(started.Load()) },
	}
	ctx, cancel := shutdown.OnSignal(ctx, sigs, log)
	defer cancel()
	if m != nil {
		// Up before recovery, so /readyz can say the server is recovering,
		// and until run returns, so it can say the server is draining or
		// its store failed: a signal does not stop it, and every return
		// path does (waiting for it on a context nothing cancels hung).
		httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
		_, wait, err := metrics.Serve(httpCtx, cfg.MetricsListen, metrics.Handler(m.Registry(), health), log)
		if err != nil {
			stopHTTP()
			log.Error("server_start", logging.Fail, zap.Error(err))
			return 1
		}
		defer func() {
			stopHTTP()
			_ = wait()
		}()
	}
	srv, err := eventserver.New(cfg)
	if err != nil {
		log.Error("server_start", logging.Fail, zap.Error(err))
		return 1
	}
	started.Store(srv)
	go reloadKeys(ctx, cfg, hup)
	if err := srv.Serve(ctx); err != nil {
		log.Error("server_exit", logging.Fail, zap.Error(err))
		return 1
	}
	log.Info("server_exit", logging.Success)
	return 0
}

// ready is the readiness check: the server accepts agencies and its store
// can write.
func ready(srv *eventserver.Server) error {
	switch {
	case srv == nil:
		return errors.New("recovering the store")
	case srv.Store().Err() != nil: // before Draining: a failed store drains too
		return fmt.Errorf("store failed: %w", srv.Store().Err())
	case srv.Draining():
		return errors.New("draining after a signal")
	case srv.Store().Unavailable() != nil:
		return fmt.Errorf("store unreachable: %w", srv.Store().Unavailable())
	}
	select {
	case <-srv.Ready():
		return nil
	default:
		return errors.New("not listening yet")
	}
}

// reloadKeys re-reads the agencies' public keys on each signal on hup, so a
// replaced agency-I.pub takes effect for new connections without a restart.
func reloadKeys(ctx context.Context, cfg eventserver.Config, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if cfg.Keys == nil {
			cfg.Logger.Warn("keys_reload", logging.Fail, zap.String("reason", "the server runs --insecure: no keys to reload"))
			continue
		}
		if err := cfg.Keys.Reload(); err != nil {
			cfg.Logger.Error("keys_reload", logging.Fail, zap.Error(err), zap.String("kept", "the keys loaded before"))
			continue
		}
		cfg.Logger.Info("keys_reload", logging.Success, zap.Int("agencies_without_key", len(cfg.Keys.Missing())))
	}
}
