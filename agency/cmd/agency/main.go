// Command agency uploads one betting agency's bets to the event server and
// reports the agency's winners after the draw.
//
// Settings come from flags, then CLI_* environment variables, then the YAML
// file named by --config (the course's client config.yaml works as is), then
// defaults. Bad settings exit with status 2; a failed upload exits 1.
package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/config"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/internal/shutdown"
	"github.com/tp0/loteria/secure"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv, shutdown.Notify()))
}

// singleBetEnv are the variables of single-bet mode, in the order of the bet's fields.
var singleBetEnv = []string{"NOMBRE", "APELLIDO", "DOCUMENTO", "NACIMIENTO", "NUMERO"}

type settings struct {
	cfg    agency.Config
	bets   string
	single *frame.Bet
	log    *zap.Logger
}

// run is the whole program; the first signal on sigs stops the upload,
// closes the socket and the file, and exits 0.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) (string, bool), sigs <-chan os.Signal) int {
	st, err := load(args, stdout, env)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "agency: %v\n", err)
		return 2
	}
	log := st.log
	defer log.Sync()
	ctx, cancel := shutdown.OnSignal(ctx, sigs, log, zap.Uint32("agency", st.cfg.Agency))
	defer cancel()

	var src agency.Source
	if st.single != nil {
		src = agency.NewSliceSource([]frame.Bet{*st.single})
	} else {
		f, err := agency.OpenFile(st.bets)
		if err != nil {
			log.Error("open_bets", logging.Fail, zap.String("file", st.bets), zap.Error(err))
			return 1
		}
		src = f
	}
	res, err := agency.Run(ctx, st.cfg, src)
	closeErr := src.Close()
	if st.single == nil {
		if closeErr != nil {
			log.Error("close_file", logging.Fail, zap.String("file", st.bets), zap.Error(closeErr))
		} else {
			log.Info("close_file", logging.Success, zap.String("file", st.bets))
		}
	}
	if ctx.Err() != nil {
		log.Info("shutdown", logging.Success, zap.String("signal", shutdown.SignalName(ctx)), zap.Uint32("agency", st.cfg.Agency),
			zap.Uint64("bets_acknowledged", res.Bets))
		return 0
	}
	if err != nil {
		log.Error("exit", logging.Fail, zap.Uint32("agency", st.cfg.Agency), zap.Error(err))
		return 1
	}
	log.Info("exit", logging.Success, zap.Uint32("agency", st.cfg.Agency), zap.Uint64("bets", res.Bets),
		zap.Int("cant_ganadores", len(res.Winners)))
	return 0
}

func load(args []string, stdout io.Writer, env func(string) (string, bool)) (*settings, error) {
	set := config.New("agency", "config", "CLI_CONFIG")
	fs := set.Flags()
	id := fs.Uint32("id", 0, "agency id, 1..N (required)")
	server := fs.String("server", agency.DefaultServer, "event server address, host:port; several, comma-separated, are tried in turn")
	bets := fs.String("bets", "", "CSV file of bets (default .data/agency-<id>.csv)")
	batch := fs.Int("batch-max-amount", agency.DefaultBatchMaxAmount, "most bets per batch (a batch is also cut to fit 8 KiB)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", logging.FormatConsole, "console (action lines) or json")
	wait := fs.String("wait", agency.WaitHold, "after FINISHED: hold (stay connected for the push) or poll (reconnect and ask)")
	retryBase := fs.Duration("retry-base", agency.DefaultRetryBase, "first reconnect delay (doubles, with jitter)")
	retryMax := fs.Duration("retry-max", agency.DefaultRetryMax, "longest reconnect or poll delay")
	giveUp := fs.Duration("give-up", agency.DefaultGiveUp, "stop after this long without progress (a new bet acknowledged, a receipt, the winners, a NOT_READY)")
	ioTimeout := fs.Duration("io-timeout", agency.DefaultIOTimeout, "dial and handshake timeout, longest wait for an answer")
	key := fs.String("key", "", "this agency's private key file (bin/keygen writes agency-<id>.key)")
	serverPub := fs.String("server-pub", "", "the server's public key file (server.pub)")
	insecure := fs.Bool("insecure", false, "speak plaintext, without keys, to a server run with --insecure")
	signPub := fs.String("sign-pub", "", "the server's signing key (server-sign.pub); default: beside --server-pub when it exists")
	receiptFile := fs.String("receipt", "", "where to save the server's receipt (default: <bets file>.receipt.json)")
	set.Bind("id", []string{"CLI_ID"}, "id")
	set.Bind("server", []string{"CLI_SERVER_ADDRESS"}, "server.address")
	set.Bind("bets", []string{"CLI_BETS"}, "bets.file", "bets")
	set.Bind("batch-max-amount", []string{"CLI_BATCH_MAXAMOUNT"}, "batch.maxAmount")
	set.Bind("log-level", []string{"CLI_LOG_LEVEL"}, "log.level")
	set.Bind("log-format", []string{"CLI_LOG_FORMAT"}, "log.format")
	set.Bind("wait", []string{"CLI_WAIT"}, "wait")
	set.Bind("retry-base", []string{"CLI_RETRY_BASE"}, "retry.base")
	set.Bind("retry-max", []string{"CLI_RETRY_MAX"}, "retry.max")
	set.Bind("give-up", []string{"CLI_GIVE_UP"}, "retry.give_up")
	set.Bind("io-timeout", []string{"CLI_IO_TIMEOUT"}, "io_timeout")
	set.Bind("key", []string{"CLI_KEY"}, "security.key")
	set.Bind("server-pub", []string{"CLI_SERVER_PUB"}, "security.server_pub")
	set.Bind("insecure", []string{"CLI_INSECURE"}, "security.insecure")
	set.Bind("sign-pub", []string{"CLI_SIGN_PUB"}, "security.sign_pub")
	set.Bind("receipt", []string{"CLI_RECEIPT"}, "receipt")
	set.Ignore("loop")
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: agency --id N [flags]\n\n%s\nSingle-bet mode: set all of %s to send that one bet.\n",
			set.Usage(), strings.Join(singleBetEnv, ", "))
	}
	if err := set.Load(args, env); err != nil {
		return nil, err
	}
	bad := func(name, format string, a ...any) error {
		return set.Invalid(name, fmt.Errorf(format, a...))
	}
	switch {
	case *id == 0:
		return nil, bad("id", "required: give --id, CLI_ID or id in the config file (1..N)")
	case *batch < 1 || *batch > 0xFFFF:
		return nil, bad("batch-max-amount", "must be from 1 to 65535, got %d", *batch)
	case *wait != agency.WaitHold && *wait != agency.WaitPoll:
		return nil, bad("wait", "must be hold or poll, got %q", *wait)
	case *retryBase <= 0:
		return nil, bad("retry-base", "must be positive, got %v", *retryBase)
	case *retryMax < *retryBase:
		return nil, bad("retry-max", "must be at least retry-base (%v), got %v", *retryBase, *retryMax)
	case *giveUp <= 0:
		return nil, bad("give-up", "must be positive, got %v", *giveUp)
	case *ioTimeout < 100*time.Millisecond:
		return nil, bad("io-timeout", "must be at least 100ms, got %v", *ioTimeout)
	}
	var servers []string
	for _, addr := range strings.Split(*server, ",") {
		addr = strings.TrimSpace(addr)
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, bad("server", "%q is not host:port: %v", addr, err)
		}
		if p, err := strconv.Atoi(port); err == nil && (p < 1 || p > 65535) { // a name (http) is looked up when dialing
			return nil, bad("server", "%q: port %d is not from 1 to 65535", addr, p)
		}
		servers = append(servers, addr)
	}
	sec, err := loadKeys(*key, *serverPub, *signPub, *insecure)
	if err != nil {
		return nil, err
	}
	if _, err := logging.ParseLevel(*level); err != nil {
		return nil, bad("log-level", "%v", err)
	}
	if _, err := logging.ParseFormat(*format); err != nil {
		return nil, bad("log-format", "%v", err)
	}
	single, err := singleBet(env)
	if err != nil {
		return nil, err
	}
	if *bets == "" {
		*bets = fmt.Sprintf(".data/agency-%d.csv", *id)
	}
	if *receiptFile == "" && single == nil {
		*receiptFile = *bets + ".receipt.json"
	}
	log, err := logging.New(*level, *format, stdout)
	if err != nil {
		return nil, err
	}
	fields := []zap.Field{logging.Success}
	for _, kv := range set.Effective() {
		fields = append(fields, zap.String(kv[0], kv[1]))
	}
	if single != nil {
		fields = append(fields, zap.String("bets_from", "environment"))
	}
	fields = append(fields, zap.String("mode", sec.mode), zap.String("sign_pub_used", sec.signPath))
	log.Info("config", fields...)
	return &settings{
		cfg: agency.Config{
			Agency:         *id,
			Servers:        servers,
			BatchMaxAmount: *batch,
			Wait:           *wait,
			RetryBase:      *retryBase,
			RetryMax:       *retryMax,
			GiveUp:         *giveUp,
			IOTimeout:      *ioTimeout,
			LogEachBet:     single != nil,
			Logger:         log,
			Key:            sec.key,
			ServerPub:      sec.serverPub,
			SignPub:        sec.signPub,
			ReceiptFile:    *receiptFile,
		},
		bets:   *bets,
		single: single,
		log:    log,
	}, nil
}

// security is the agency's keys, loaded from the files its settings name.
type security struct {
	mode      string // secure or insecure, for the config line
	key       *secure.PrivateKey
	serverPub secure.PublicKey
	signPub   ed25519.PublicKey
	signPath  string
}

// loadKeys reads the key files, insisting on keys or --insecure.
func loadKeys(keyPath, serverPubPath, signPubPath string, insecure bool) (security, error) {
	bad := func(name, format string, a ...any) error {
		return &config.Error{Setting: name, Err: fmt.Errorf(format, a...)}
	}
	switch {
	case insecure && (keyPath != "" || serverPubPath != ""):
		return security{}, bad("insecure", "--insecure and --key/--server-pub exclude each other; give one")
	case insecure:
		return security{mode: "insecure"}, nil
	case keyPath == "" && serverPubPath == "":
		return security{}, bad("key", "give --key and --server-pub (the agency proves its identity and its "+
			"connection is encrypted) or --insecure (plaintext, for a server run with --insecure); refusing to start with neither")
	case keyPath == "":
		return security{}, bad("key", "--server-pub is set but --key is not: give this agency's private key file too")
	case serverPubPath == "":
		return security{}, bad("server-pub", "--key is set but --server-pub is not: give the server's public key file too")
	}
	key, err := secure.LoadPrivateKey(keyPath)
	if err != nil {
		return security{}, bad("key", "%v", err)
	}
	pub, err := secure.LoadPublicKey(serverPubPath)
	if err != nil {
		return security{}, bad("server-pub", "%v", err)
	}
	sec := security{mode: "secure", key: &key, serverPub: pub}
	if signPubPath == "" {
		if guess := filepath.Join(filepath.Dir(serverPubPath), secure.VerifyKeyFile); fileExists(guess) {
			signPubPath = guess
		}
	}
	if signPubPath != "" {
		if sec.signPub, err = secure.LoadVerifyKey(signPubPath); err != nil {
			return security{}, bad("sign-pub", "%v", err)
		}
		sec.signPath = signPubPath
	}
	return sec, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// singleBet reads single-bet mode's variables: all set means one bet to
// send, none set means the file, some set is a mistake worth stopping for.
func singleBet(env func(string) (string, bool)) (*frame.Bet, error) {
	vals := make([]string, len(singleBetEnv))
	var missing []string
	for i, name := range singleBetEnv {
		v, ok := env(name)
		if !ok {
			missing = append(missing, name)
		}
		vals[i] = v
	}
	switch len(missing) {
	case len(singleBetEnv):
		return nil, nil
	case 0:
	default:
		return nil, &config.Error{Setting: "single-bet mode", Err: fmt.Errorf("needs all of %s; missing %s",
			strings.Join(singleBetEnv, ", "), strings.Join(missing, ", "))}
	}
	b, err := agency.ParseBet(vals[0], vals[1], vals[2], vals[3], vals[4], frame.Today())
	if err != nil {
		return nil, &config.Error{Setting: "single-bet mode", Err: fmt.Errorf("environment bet: %w", err)}
	}
	return &b, nil
}
