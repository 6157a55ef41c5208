package eventserver

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/config"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
)

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxFrame <= 0 || c.MaxFrame > frame.MaxSize {
		c.MaxFrame = frame.MaxSize
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// OpenStore opens (and recovers) the store c describes. Its queue holds one
// request per allowed connection, so a session's Submit never finds it full.
func OpenStore(c Config) (*persist.Store, error) {
	return persist.Open(c.DataDir, persist.Options{
		Agencies:      c.Agencies,
		WinningNumber: c.WinningNumber,
		QueueSize:     c.MaxConns + 64,
		Logger:        c.Logger,
	})
}

// LoadConfig reads the server's settings — flags in args, then SERVER_*
// variables through env, then the YAML file named by --config, then
// defaults — validates them, and builds the logger writing to stdout, which
// it uses to log the effective settings. Errors name the bad setting;
// errors.Is(err, config.ErrHelp) after -h.
func LoadConfig(program string, args []string, stdout io.Writer, env func(string) (string, bool)) (Config, error) {
	set := config.New(program, "config", "SERVER_CONFIG")
	fs := set.Flags()
	listen := fs.String("listen", DefaultListen, "address to listen on, host:port")
	agencies := fs.Int("agencies", DefaultAgencies, "agencies the draw waits for (ids 1..N)")
	dataDir := fs.String("data-dir", ".", "directory for bets.csv and its journal")
	winning := fs.Int("winning-number", DefaultWinningNumber, "a bet wins when its number equals this (0-9999)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", logging.FormatConsole, "console (action lines) or json")
	readTimeout := fs.Duration("read-timeout", DefaultReadTimeout, "longest wait for a complete frame when one is expected")
	maxConns := fs.Int("max-conns", DefaultMaxConns, "connections beyond this are refused")
	maxFrame := fs.Int("max-frame", frame.MaxSize, "largest frame accepted, in bytes (at most 8192)")
	grace := fs.Duration("shutdown-grace", DefaultShutdownGrace, "how long SIGTERM waits for in-flight batches")
	retry := fs.Duration("retry-after", DefaultRetryAfter, "retry hint sent with NOT_READY")
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
		fmt.Fprintf(stdout, "Usage: %s [flags]\n\n%s", program, set.Usage())
	}
	if err := set.Load(args, env); err != nil {
		return Config{}, err
	}

	bad := func(name, format string, a ...any) error {
		return &config.Error{Setting: name, Err: fmt.Errorf(format, a...)}
	}
	if _, port, err := net.SplitHostPort(*listen); err != nil {
		return Config{}, bad("listen", "%q is not host:port: %v", *listen, err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return Config{}, bad("listen", "port %q is not a number from 0 to 65535", port)
	}
	switch {
	case *agencies < 1 || *agencies > 1<<20:
		return Config{}, bad("agencies", "must be from 1 to %d, got %d", 1<<20, *agencies)
	case *dataDir == "":
		return Config{}, bad("data-dir", "must not be empty")
	case *winning < 0 || *winning > frame.MaxNumber:
		return Config{}, bad("winning-number", "must be from 0 to %d, got %d", frame.MaxNumber, *winning)
	case *readTimeout < 100*time.Millisecond:
		return Config{}, bad("read-timeout", "must be at least 100ms, got %v", *readTimeout)
	case *maxConns < 1:
		return Config{}, bad("max-conns", "must be at least 1, got %d", *maxConns)
	case *maxFrame < 64 || *maxFrame > frame.MaxSize:
		return Config{}, bad("max-frame", "must be from 64 to %d bytes, got %d", frame.MaxSize, *maxFrame)
	case *grace <= 0:
		return Config{}, bad("shutdown-grace", "must be positive, got %v", *grace)
	case *retry <= 0:
		return Config{}, bad("retry-after", "must be positive, got %v", *retry)
	}
	if _, err := logging.ParseLevel(*level); err != nil {
		return Config{}, bad("log-level", "%v", err)
	}
	if _, err := logging.ParseFormat(*format); err != nil {
		return Config{}, bad("log-format", "%v", err)
	}
	log, err := logging.New(*level, *format, stdout)
	if err != nil {
		return Config{}, err
	}
	fields := []zap.Field{logging.Success}
	for _, kv := range set.Effective() {
		fields = append(fields, zap.String(kv[0], kv[1]))
	}
	log.Info("config", fields...)
	return Config{
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
	}, nil
}
