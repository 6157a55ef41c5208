package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
)

// ServeStdlib is the "bench serve-stdlib" command: the baseline server with
// the gnet server's main flags. The first signal on sigs drains it; it
// returns the exit status, 0 after a clean drain.
func ServeStdlib(args []string, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	fs := pflag.NewFlagSet("bench serve-stdlib", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:12345", "address to listen on, host:port")
	agencies := fs.Int("agencies", eventserver.DefaultAgencies, "agencies the draw waits for (ids 1..N)")
	dataDir := fs.String("data-dir", ".", "directory for bets.csv and its journal")
	winning := fs.Int("winning-number", eventserver.DefaultWinningNumber, "a bet wins when its number equals this (0-9999)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", logging.FormatConsole, "console (action lines) or json")
	readTimeout := fs.Duration("read-timeout", eventserver.DefaultReadTimeout, "longest wait for a complete frame when one is expected")
	maxConns := fs.Int("max-conns", eventserver.DefaultMaxConns, "connections beyond this are refused")
	grace := fs.Duration("shutdown-grace", eventserver.DefaultShutdownGrace, "how long SIGTERM waits for in-flight batches")
	retry := fs.Duration("retry-after", eventserver.DefaultRetryAfter, "retry hint sent with NOT_READY")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "serve-stdlib: %v\n", err)
		return 2
	}
	switch {
	case *agencies < 1:
		fmt.Fprintf(stderr, "serve-stdlib: --agencies must be at least 1, got %d\n", *agencies)
		return 2
	case *winning < 0 || *winning > frame.MaxNumber:
		fmt.Fprintf(stderr, "serve-stdlib: --winning-number must be from 0 to %d, got %d\n", frame.MaxNumber, *winning)
		return 2
	case *maxConns < 1 || *readTimeout <= 0 || *grace <= 0 || *retry <= 0:
		fmt.Fprintln(stderr, "serve-stdlib: --max-conns, --read-timeout, --shutdown-grace and --retry-after must be positive")
		return 2
	}
	log, err := logging.New(*level, *format, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "serve-stdlib: %v\n", err)
		return 2
	}
	defer log.Sync()
	log.Info("config", logging.Success, zap.String("server", "stdlib"), zap.String("listen", *listen),
		zap.Int("agencies", *agencies), zap.String("data-dir", *dataDir), zap.Int("max-conns", *maxConns))
	srv, err := NewStdServer(eventserver.Config{
		Listen:        *listen,
		Agencies:      *agencies,
		DataDir:       *dataDir,
		WinningNumber: uint16(*winning),
		ReadTimeout:   *readTimeout,
		MaxConns:      *maxConns,
		ShutdownGrace: *grace,
		RetryAfter:    *retry,
		Logger:        log,
	})
	if err != nil {
		log.Error("server_start", logging.Fail, zap.Error(err))
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case sig := <-sigs:
			signal.Reset(syscall.SIGTERM, syscall.SIGINT)
			log.Info("signal", logging.Success, zap.String("signal", sig.String()))
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := srv.Serve(ctx); err != nil {
		log.Error("server_exit", logging.Fail, zap.Error(err))
		return 1
	}
	log.Info("server_exit", logging.Success)
	return 0
}
