// Command eventserver runs the lottery's central server.
//
// Settings come from flags, then SERVER_* environment variables, then the
// YAML file named by --config, then defaults. Bad settings exit with status 2.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/config"
	"github.com/tp0/loteria/internal/logging"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv, sigs))
}

// run is the whole program; the first signal on sigs starts a graceful
// drain, and a second one kills the process the default way.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) (string, bool), sigs <-chan os.Signal) int {
	cfg, log, err := load(args, stdout, env)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "eventserver: %v\n", err)
		return 2
	}
	defer log.Sync()
	srv, err := eventserver.New(cfg)
	if err != nil {
		log.Error("server_start", logging.Fail, zap.Error(err))
		return 1
	}
	ctx, cancel := context.WithCancel(ctx)
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

func load(args []string, stdout io.Writer, env func(string) (string, bool)) (eventserver.Config, *zap.Logger, error) {
	set := config.New("eventserver", "config", "SERVER_CONFIG")
	fs := set.Flags()
	listen := fs.String("listen", eventserver.DefaultListen, "address to listen on, host:port")
	agencies := fs.Int("agencies", eventserver.DefaultAgencies, "agencies the draw waits for (ids 1..N)")
	dataDir := fs.String("data-dir", ".", "directory for bets.csv and its journal")
	winning := fs.Int("winning-number", eventserver.DefaultWinningNumber, "a bet wins when its number equals this (0-9999)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", logging.FormatConsole, "console (action lines) or json")
	readTimeout := fs.Duration("read-timeout", eventserver.DefaultReadTimeout, "longest wait for a complete frame when one is expected")
	maxConns := fs.Int("max-conns", eventserver.DefaultMaxConns, "connections beyond this are refused")
	maxFrame := fs.Int("max-frame", frame.MaxSize, "largest frame accepted, in bytes (at most 8192)")
	grace := fs.Duration("shutdown-grace", eventserver.DefaultShutdownGrace, "how long SIGTERM waits for in-flight batches")
	retry := fs.Duration("retry-after", eventserver.DefaultRetryAfter, "retry hint sent with NOT_READY")
	set.Bind("listen", []string{"SERVER_LISTEN"}, "server.listen", "listen")
	set.Bind("agencies", []string{"SERVER_AGENCIES"}, "agencies")
	set.Bind("data-dir", []string{"SERVER_DATA_DIR"}, "data_dir", "storage.dir")
	set.Bind("winning-number", []string{"SERVER_WINNING_NUMBER"}, "winning_number")
	set.Bind("log-level", []string{"SERVER_LOG_LEVEL", "LOGGING_LEVEL"}, "log.level")
	set.Bind("log-format", []string{"SERVER_LOG_FORMAT"}, "log.format")
	set.Bind("read-timeout", []string{"SERVER_READ_TIMEOUT"}, "limits.read_timeout")
	set.Bind("max-conns", []string{"SERVER_MAX_CONNS"}, "limits.max_conns")
	set.Bind("max-frame", []string{"SERVER_MAX_FRAME"}, "limits.max_frame")
	set.Bind("shutdown-grace", []string{"SERVER_SHUTDOWN_GRACE"}, "shutdown_grace")
	set.Bind("retry-after", []string{"SERVER_RETRY_AFTER"}, "retry_after")
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: eventserver [flags]\n\n%s", set.Usage())
	}
	if err := set.Load(args, env); err != nil {
		return eventserver.Config{}, nil, err
	}

	bad := func(name, format string, a ...any) error {
		return &config.Error{Setting: name, Err: fmt.Errorf(format, a...)}
	}
	if _, port, err := net.SplitHostPort(*listen); err != nil {
		return eventserver.Config{}, nil, bad("listen", "%q is not host:port: %v", *listen, err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return eventserver.Config{}, nil, bad("listen", "port %q is not a number from 0 to 65535", port)
	}
	switch {
	case *agencies < 1 || *agencies > 1<<20:
		return eventserver.Config{}, nil, bad("agencies", "must be from 1 to %d, got %d", 1<<20, *agencies)
	case *dataDir == "":
		return eventserver.Config{}, nil, bad("data-dir", "must not be empty")
	case *winning < 0 || *winning > frame.MaxNumber:
		return eventserver.Config{}, nil, bad("winning-number", "must be from 0 to %d, got %d", frame.MaxNumber, *winning)
	case *readTimeout < 100*time.Millisecond:
		return eventserver.Config{}, nil, bad("read-timeout", "must be at least 100ms, got %v", *readTimeout)
	case *maxConns < 1:
		return eventserver.Config{}, nil, bad("max-conns", "must be at least 1, got %d", *maxConns)
	case *maxFrame < 64 || *maxFrame > frame.MaxSize:
		return eventserver.Config{}, nil, bad("max-frame", "must be from 64 to %d bytes, got %d", frame.MaxSize, *maxFrame)
	case *grace <= 0:
		return eventserver.Config{}, nil, bad("shutdown-grace", "must be positive, got %v", *grace)
	case *retry <= 0:
		return eventserver.Config{}, nil, bad("retry-after", "must be positive, got %v", *retry)
	}
	if _, err := logging.ParseLevel(*level); err != nil {
		return eventserver.Config{}, nil, bad("log-level", "%v", err)
	}
	if _, err := logging.ParseFormat(*format); err != nil {
		return eventserver.Config{}, nil, bad("log-format", "%v", err)
	}
	log, err := logging.New(*level, *format, stdout)
	if err != nil {
		return eventserver.Config{}, nil, err
	}
	fields := []zap.Field{logging.Success}
	for _, kv := range set.Effective() {
		fields = append(fields, zap.String(kv[0], kv[1]))
	}
	log.Info("config", fields...)
	return eventserver.Config{
		Listen:        *listen,
		Agencies:      *agencies,
		DataDir:       *dataDir,
		WinningNumber: uint16(*winning),
		ReadTimeout:   *readTimeout,
		MaxConns:      *maxConns,
		MaxFrame:      *maxFrame,
		ShutdownGrace: *grace,
		RetryAfter:    *retry,
		Logger:        log,
	}, log, nil
}
