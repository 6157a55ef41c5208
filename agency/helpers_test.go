package agency_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/secure"
)

// hangGuard bounds every wait in these tests; it is never a timing assertion.
const hangGuard = 30 * time.Second

// TestMain fails the package if a goroutine outlives the tests. Goroutines
// running before the first test are gnet's process-wide worker pool (the
// eventserver package starts it when it is initialised): they are ignored
// by identity, so anything a test starts is still reported.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

// noLeaks checks, after every other cleanup of the test, that the test left
// no goroutine behind that was not running when it started. Call it first,
// and not from a parallel test.
func noLeaks(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// syncBuffer is a log sink safe for concurrent writes that can tell a test
// when a line it waits for is written.
type syncBuffer struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	watchers []watcher
}

type watcher struct {
	re   *regexp.Regexp
	seen chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notify(p)
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// notify closes the channel of every watcher whose line is in p.
func (b *syncBuffer) notify(p []byte) {
	kept := b.watchers[:0]
	for _, w := range b.watchers {
		if w.re.Match(p) {
			close(w.seen)
			continue
		}
		kept = append(kept, w)
	}
	b.watchers = kept
}

// seen returns a channel closed once a line whose text after "action: "
// matches pattern has been written (already, or later).
func (b *syncBuffer) seen(pattern string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := watcher{re: linePattern(pattern), seen: make(chan struct{})}
	if w.re.Match(b.buf.Bytes()) {
		close(w.seen)
	} else {
		b.watchers = append(b.watchers, w)
	}
	return w.seen
}

// await waits until a line matching pattern is written.
func (b *syncBuffer) await(t testing.TB, pattern string) {
	t.Helper()
	select {
	case <-b.seen(pattern):
	case <-time.After(hangGuard):
		t.Fatalf("no log line matching %q", pattern)
	}
}

// testLogger returns a debug logger whose lines the test can read; they are
// printed when the test fails.
func testLogger(t testing.TB) (*zap.Logger, *syncBuffer) {
	t.Helper()
	var buf syncBuffer
	log, err := logging.New("debug", logging.FormatConsole, &buf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("client log:\n%s", buf.String())
		}
	})
	return log, &buf
}

// hasLine reports whether some line of log matches the pattern that follows
// "action: ".
func hasLine(log, pattern string) bool { return linePattern(pattern).MatchString(log) }

// linePattern matches a whole log line whose text after "action: " matches pattern.
func linePattern(pattern string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [A-Z]+ action: ` + pattern + `$`)
}

// writeBetsFile writes content to a new file and returns its path.
func writeBetsFile(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agency-1.csv")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func openFile(t testing.TB, content string) (*agency.FileSource, string) {
	t.Helper()
	path := writeBetsFile(t, content)
	src, err := agency.OpenFile(path)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	t.Cleanup(func() { src.Close() })
	return src, path
}

// testBets returns n valid bets whose names are nameLen bytes long (at
// least 8) and whose documents and numbers encode their position.
func testBets(n, nameLen int) []frame.Bet {
	bets := make([]frame.Bet, n)
	for i := range bets {
		bets[i] = frame.Bet{
			FirstName: fmt.Sprintf("N%07d", i) + strings.Repeat("a", max(nameLen, 8)-8),
			LastName:  fmt.Sprintf("L%07d", i) + strings.Repeat("b", max(nameLen, 8)-8),
			Document:  fmt.Sprintf("%08d", 10000000+i),
			Birthdate: frame.NewDate(1950+i%50, 1+i%12, 1+i%28),
			Number:    uint16(i % 10000),
		}
	}
	return bets
}

// betsCSV formats bets (plain names, no quoting needed) as LF lines.
func betsCSV(bets []frame.Bet) string {
	var b strings.Builder
	for _, bet := range bets {
		fmt.Fprintf(&b, "%s,%s,%s,%s,%d\n", bet.FirstName, bet.LastName, bet.Document, bet.Birthdate, bet.Number)
	}
	return b.String()
}

func bet(first, last, doc string, date frame.Date, number uint16) frame.Bet {
	return frame.Bet{FirstName: first, LastName: last, Document: doc, Birthdate: date, Number: number}
}

func sameBets(t testing.TB, got, want []frame.Bet) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d bets, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("bet %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// countingSource wraps a Source and counts how often it is rewound and
// sought, to tell a resume from a checkpoint (a Seek) from a re-read of the
// whole file (a Rewind).
type countingSource struct {
	agency.Source
	rewinds, seeks atomic.Int64
}

func (c *countingSource) Rewind() error {
	c.rewinds.Add(1)
	return c.Source.Rewind()
}

func (c *countingSource) Seek(p agency.Position) error {
	c.seeks.Add(1)
	return c.Source.Seek(p)
}

// keySet is a key directory as bin/keygen writes it, generated afresh.
type keySet struct {
	dir       string
	serverPub secure.PublicKey
	sign      ed25519.PrivateKey
	signPub   ed25519.PublicKey
	agencies  []secure.PrivateKey // agencies[i] is agency i+1's
}

// newKeySet writes the server's key pairs and n agencies' into a new
// directory.
func newKeySet(t testing.TB, n int) *keySet {
	t.Helper()
	ks := &keySet{dir: t.TempDir()}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	server, err := secure.GenerateKey(nil)
	must(err)
	ks.serverPub = server.Public()
	must(secure.WritePrivateKey(filepath.Join(ks.dir, secure.ServerKeyFile), "server", server))
	must(secure.WritePublicKey(filepath.Join(ks.dir, secure.ServerPubFile), "server", ks.serverPub))
	ks.signPub, ks.sign, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	must(secure.WriteSigningKey(filepath.Join(ks.dir, secure.SignKeyFile), "server", ks.sign))
	must(secure.WriteVerifyKey(filepath.Join(ks.dir, secure.VerifyKeyFile), "server", ks.signPub))
	for i := range n {
		k, err := secure.GenerateKey(nil)
		must(err)
		id := uint32(i + 1)
		must(secure.WritePrivateKey(filepath.Join(ks.dir, secure.AgencyKeyFile(id)), fmt.Sprintf("agency %d", id), k))
		must(secure.WritePublicKey(filepath.Join(ks.dir, secure.AgencyPubFile(id)), fmt.Sprintf("agency %d", id), k.Public()))
		ks.agencies = append(ks.agencies, k)
	}
	return ks
}

// secured sets cfg up to speak to a server holding ks as agency id.
func (ks *keySet) secured(cfg agency.Config, id uint32) agency.Config {
	k := ks.agencies[id-1]
	cfg.Agency, cfg.Key, cfg.ServerPub, cfg.SignPub = id, &k, ks.serverPub, ks.signPub
	return cfg
}

// realServer is an in-process event server on 127.0.0.1.
type realServer struct {
	*eventserver.Server
	dir    string
	log    *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startServer runs an event server until the test ends: secured with ks,
// or plaintext (--insecure) when ks is nil. Unset fields of cfg get small
// test values; its log is printed if the test fails.
func startServer(t testing.TB, cfg eventserver.Config, ks *keySet) *realServer {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Agencies == 0 {
		cfg.Agencies = 1
	}
	if cfg.WinningNumber == 0 {
		cfg.WinningNumber = eventserver.DefaultWinningNumber
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = time.Second
	}
	var buf syncBuffer
	if cfg.Logger == nil {
		log, err := logging.New("debug", logging.FormatConsole, &buf)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Logger = log
	}
	if ks != nil {
		store, err := secure.OpenKeyStore(ks.dir, cfg.Agencies)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Keys, cfg.SignKey = store, ks.sign
	}
	srv, err := eventserver.New(cfg)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rs := &realServer{Server: srv, dir: cfg.DataDir, log: &buf, cancel: cancel, done: make(chan error, 1)}
	go func() { rs.done <- srv.Serve(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-rs.done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(hangGuard):
		t.Fatal("server did not start")
	}
	t.Cleanup(func() {
		rs.stop(t)
		if t.Failed() {
			t.Logf("server log:\n%s", buf.String())
		}
	})
	return rs
}

// stop drains the server and waits for Serve to return; later calls do nothing.
func (rs *realServer) stop(t testing.TB) {
	t.Helper()
	if rs.cancel == nil {
		return
	}
	rs.cancel()
	rs.cancel = nil
	select {
	case err := <-rs.done:
		if err != nil {
			t.Errorf("server: %v", err)
		}
	case <-time.After(hangGuard):
		t.Error("server did not stop")
	}
}

type outcome struct {
	res agency.Result
	err error
}

// runAsync starts agency.Run; wait collects it within the hang guard.
func runAsync(ctx context.Context, cfg agency.Config, src agency.Source) <-chan outcome {
	done := make(chan outcome, 1)
	go func() {
		res, err := agency.Run(ctx, cfg, src)
		done <- outcome{res, err}
	}()
	return done
}

func wait(t testing.TB, done <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-done:
		return o
	case <-time.After(hangGuard):
		t.Fatal("agency.Run did not return")
		return outcome{}
	}
}

func run(t testing.TB, cfg agency.Config, src agency.Source) outcome {
	t.Helper()
	return wait(t, runAsync(context.Background(), cfg, src))
}

func fileSource(t testing.TB, bets []frame.Bet) *agency.FileSource {
	t.Helper()
	src, _ := openFile(t, betsCSV(bets))
	return src
}

// winnersOf lists the documents of bets carrying number, in order.
func winnersOf(bets []frame.Bet, number uint16) []string {
	var docs []string
	for _, b := range bets {
		if b.Number == number {
			docs = append(docs, b.Document)
		}
	}
	return docs
}
