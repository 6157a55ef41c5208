package eventserver

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/config"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/persist/pgstore"
	"github.com/tp0/loteria/secure"
)

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.HelloTimeout <= 0 {
		c.HelloTimeout = DefaultHelloTimeout
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.MaxPending <= 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.MaxFrame <= 0 || c.MaxFrame > frame.MaxSize {
		c.MaxFrame = frame.MaxSize
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
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

// OpenStore opens (and recovers) the store c describes — PostgreSQL when
// c.Store is a postgres:// URL, the data directory c.DataDir otherwise —
// and starts its writer.
func OpenStore(c Config) (*persist.Store, error) {
	var backend persist.Backend
	var err error
	if c.Store != "" {
		backend, err = pgstore.Open(context.Background(), c.Store, pgstore.Options{
			Agencies:      c.Agencies,
			WinningNumber: c.WinningNumber,
			Logger:        c.Logger,
		})
	} else {
		backend, err = filestore.Open(c.DataDir, filestore.Options{
			Agencies:       c.Agencies,
			WinningNumber:  c.WinningNumber,
			Logger:         c.Logger,
			RebuildJournal: c.RebuildJournal,
			Sync:           c.StoreSync,
		})
	}
	if err != nil {
		return nil, err
	}
	var obs persist.Observer
	if o, ok := c.Observer.(persist.Observer); ok {
		obs = o
	}
	store, err := persist.New(backend, persist.Options{
		Agencies:      c.Agencies,
		WinningNumber: c.WinningNumber,
		Logger:        c.Logger,
		Observer:      obs,
		Tamper:        c.Tamper,
	})
	if err != nil {
		backend.Close()
		return nil, err
	}
	return store, nil
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
	dataDir := fs.String("data-dir", ".", "directory for bets.csv and its journal (the file store, used without --store)")
	store := fs.String("store", "", "PostgreSQL store shared by several servers, postgres://user[:password]@host:port/database; empty: the file store in --data-dir")
	winning := fs.Int("winning-number", DefaultWinningNumber, "a bet wins when its number equals this (0-9999)")
	keys := fs.String("keys", "", "directory with server.key, server-sign.key and agency-I.pub (bin/keygen writes them)")
	insecure := fs.Bool("insecure", false, "accept plaintext agencies with no keys (the protocol as PROTOCOL.md documents it)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", logging.FormatConsole, "console (action lines) or json")
	readTimeout := fs.Duration("read-timeout", DefaultReadTimeout, "longest wait for a frame, or a PONG, when one is due")
	helloTimeout := fs.Duration("hello-timeout", DefaultHelloTimeout, "a new connection must complete HELLO within this")
	pingInterval := fs.Duration("ping-interval", DefaultPingInterval, "an agency waiting for the draw is PINGed after this much silence")
	maxPending := fs.Int("max-pending", DefaultMaxPending, "connections that have not completed HELLO, at most")
	maxFrame := fs.Int("max-frame", frame.MaxSize, "largest frame accepted, in bytes (64-8192); agencies learn it from WELCOME")
	window := fs.Int("window", DefaultWindow, "most frames an agency may have unanswered (1-1024); agencies learn it from WELCOME")
	grace := fs.Duration("shutdown-grace", DefaultShutdownGrace, "how long SIGTERM waits for in-flight batches")
	retry := fs.Duration("retry-after", DefaultRetryAfter, "retry hint sent with NOT_READY")
	rebuild := fs.Bool("rebuild-journal", false, "accept a damaged or missing bets.journal, rebuilding it from bets.csv (FINISHED facts are forgotten)")
	metrics := fs.String("metrics-listen", "", "serve /metrics, /healthz and /readyz on this host:port (off when empty)")
	set.Bind("listen", []string{"SERVER_LISTEN"}, "server.listen", "listen")
	set.Bind("agencies", []string{"SERVER_AGENCIES"}, "agencies")
	set.Bind("data-dir", []string{"SERVER_DATA_DIR"}, "data_dir", "storage.dir")
	set.Bind("store", []string{"SERVER_STORE"}, "storage.url")
	set.Bind("winning-number", []string{"SERVER_WINNING_NUMBER"}, "winning_number")
	set.Bind("keys", []string{"SERVER_KEYS"}, "security.keys")
	set.Bind("insecure", []string{"SERVER_INSECURE"}, "security.insecure")
	set.Bind("log-level", []string{"SERVER_LOG_LEVEL", "LOGGING_LEVEL"}, "log.level")
	set.Bind("log-format", []string{"SERVER_LOG_FORMAT"}, "log.format")
	set.Bind("read-timeout", []string{"SERVER_READ_TIMEOUT"}, "limits.read_timeout")
	set.Bind("hello-timeout", []string{"SERVER_HELLO_TIMEOUT"}, "limits.hello_timeout")
	set.Bind("ping-interval", []string{"SERVER_PING_INTERVAL"}, "limits.ping_interval")
	set.Bind("max-pending", []string{"SERVER_MAX_PENDING"}, "limits.max_pending")
	set.Bind("max-frame", []string{"SERVER_MAX_FRAME"}, "limits.max_frame")
	set.Bind("window", []string{"SERVER_WINDOW"}, "limits.window")
	set.Bind("shutdown-grace", []string{"SERVER_SHUTDOWN_GRACE"}, "shutdown_grace")
	set.Bind("retry-after", []string{"SERVER_RETRY_AFTER"}, "retry_after")
	set.Bind("rebuild-journal", []string{"SERVER_REBUILD_JOURNAL"}, "storage.rebuild_journal")
	set.Bind("metrics-listen", []string{"SERVER_METRICS_LISTEN"}, "metrics.listen")
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: %s [flags]\n\n%s", program, set.Usage())
	}
	if err := set.Load(args, env); err != nil {
		return Config{}, err
	}

	bad := func(name, format string, a ...any) error {
		return set.Invalid(name, fmt.Errorf(format, a...))
	}
	if _, port, err := net.SplitHostPort(*listen); err != nil {
		return Config{}, bad("listen", "%q is not host:port: %v", *listen, err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return Config{}, bad("listen", "port %q is not a number from 0 to 65535", port)
	}
	if *metrics != "" {
		if _, port, err := net.SplitHostPort(*metrics); err != nil {
			return Config{}, bad("metrics-listen", "%q is not host:port: %v", *metrics, err)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return Config{}, bad("metrics-listen", "port %q is not a number from 0 to 65535", port)
		}
	}
	switch {
	case *agencies < 1 || *agencies > 1<<20:
		return Config{}, bad("agencies", "must be from 1 to %d, got %d", 1<<20, *agencies)
	case *dataDir == "":
		return Config{}, bad("data-dir", "must not be empty")
	case *winning < 0 || *winning > frame.MaxNumber:
		return Config{}, bad("winning-number", "must be from 0 to %d, got %d", frame.MaxNumber, *winning)
	case *keys == "" && !*insecure:
		return Config{}, bad("keys", "give --keys DIR (agencies prove their identity with keys and every "+
			"connection is encrypted) or --insecure (plaintext, anyone may speak for any agency); refusing to start with neither")
	case *keys != "" && *insecure:
		return Config{}, bad("insecure", "--insecure and --keys exclude each other; give one")
	case *readTimeout < 100*time.Millisecond:
		return Config{}, bad("read-timeout", "must be at least 100ms, got %v", *readTimeout)
	case *helloTimeout < 100*time.Millisecond:
		return Config{}, bad("hello-timeout", "must be at least 100ms, got %v", *helloTimeout)
	case *pingInterval < 100*time.Millisecond:
		return Config{}, bad("ping-interval", "must be at least 100ms, got %v", *pingInterval)
	case *maxPending < 1:
		return Config{}, bad("max-pending", "must be at least 1, got %d", *maxPending)
	case *maxFrame < 64 || *maxFrame > frame.MaxSize:
		return Config{}, bad("max-frame", "must be from 64 to %d bytes, got %d", frame.MaxSize, *maxFrame)
	case *window < 1 || *window > 1024:
		return Config{}, bad("window", "must be from 1 to 1024, got %d", *window)
	case *grace <= 0:
		return Config{}, bad("shutdown-grace", "must be positive, got %v", *grace)
	case *retry <= 0:
		return Config{}, bad("retry-after", "must be positive, got %v", *retry)
	}
	if *store != "" {
		if *rebuild {
			return Config{}, bad("rebuild-journal", "applies to the file store's journal; PostgreSQL has none (drop --store or --rebuild-journal)")
		}
		if _, err := pgstore.ParseURL(*store); err != nil {
			e := set.Invalid("store", err)
			e.Value = redactURL(e.Value) // the URL may hold a password
			if u, perr := url.Parse(*store); perr != nil || u.Scheme == "" || u.Host == "" {
				e.Value = "(not shown: not a URL, and it may hold a password)" // a key=value DSN, say
			}
			return Config{}, e
		}
	}
	if _, err := logging.ParseLevel(*level); err != nil {
		return Config{}, bad("log-level", "%v", err)
	}
	if _, err := logging.ParseFormat(*format); err != nil {
		return Config{}, bad("log-format", "%v", err)
	}
	var keyStore *secure.KeyStore
	var signKey ed25519.PrivateKey
	if *keys != "" {
		var err error
		if keyStore, err = secure.OpenKeyStore(*keys, *agencies); err != nil {
			return Config{}, bad("keys", "%v (bin/keygen --dir %s --agencies %d writes the keys)", err, *keys, *agencies)
		}
		if signKey, err = secure.LoadSigningKey(filepath.Join(*keys, secure.SignKeyFile)); err != nil {
			return Config{}, bad("keys", "%v (bin/keygen --dir %s --agencies %d writes it)", err, *keys, *agencies)
		}
	}
	newLogger := logging.New
	if _, ok := stdout.(*os.File); ok {
		newLogger = logging.NewBuffered // the event loops must never wait on stdout
	}
	log, err := newLogger(*level, *format, stdout)
	if err != nil {
		return Config{}, err
	}
	fields := []zap.Field{logging.Success}
	for _, kv := range set.Effective() {
		if kv[0] == "store" && kv[1] != "" {
			kv[1] = redactURL(kv[1]) // the URL may hold a password
		}
		fields = append(fields, zap.String(kv[0], kv[1]))
	}
	mode := "secure"
	if keyStore == nil {
		mode = "insecure"
	}
	fields = append(fields, zap.String("mode", mode))
	log.Info("config", fields...)
	if keyStore != nil {
		if missing := keyStore.Missing(); len(missing) > 0 {
			log.Warn("keys", logging.Fail, zap.String("dir", *keys), zap.Int("agencies_without_key", len(missing)),
				zap.String("first_missing", fmt.Sprint(missing[:min(len(missing), 10)])))
		}
	}
	return Config{
		Listen:         *listen,
		Agencies:       *agencies,
		DataDir:        *dataDir,
		Store:          *store,
		WinningNumber:  uint16(*winning),
		ReadTimeout:    *readTimeout,
		HelloTimeout:   *helloTimeout,
		PingInterval:   *pingInterval,
		MaxPending:     *maxPending,
		MaxFrame:       *maxFrame,
		Window:         *window,
		ShutdownGrace:  *grace,
		RetryAfter:     *retry,
		RebuildJournal: *rebuild,
		MetricsListen:  *metrics,
		Keys:           keyStore,
		SignKey:        signKey,
		Logger:         log,
	}, nil
}

// redactURL hides the password of a store URL, for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	q := u.Query()
	for _, k := range []string{"password", "sslpassword"} { // pgx takes both in the query too
		if q.Has(k) {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}
