package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/persist/persisttest"
	"github.com/tp0/loteria/secure"
)

// TestMain builds no lottery itself (the first test that needs one does,
// once), removes it after the tests, and fails the package if a goroutine
// outlives them; those running before the first test (gnet's process-wide
// worker pool) are ignored by identity.
func TestMain(m *testing.M) {
	before := goleak.IgnoreCurrent()
	code := m.Run()
	if shared.root != "" {
		os.RemoveAll(shared.root)
	}
	if err := goleak.Find(before); code == 0 && err != nil {
		fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

// Each agency's bet count and winners (of eventserver.DefaultWinningNumber).
var (
	sizes   = []int{40, 35, 30, 25, 5}
	winners = []int{2, 1, 1, 1, 0}
)

// lottery is a finished lottery of five agencies, run by a real secured
// server in this process: its store, the agencies' files and receipts, and
// the server's signing key. Tests must not change it: storeCopy gives each
// its own store to tamper with.
type lottery struct {
	root     string
	store    string // the server's data directory
	signPub  string // server-sign.pub
	files    []string
	receipts []string
	bets     [][]frame.Bet
}

var shared struct {
	once sync.Once
	lottery
	err error
}

// theLottery runs the lottery the first time it is asked for.
func theLottery(t *testing.T) *lottery {
	t.Helper()
	shared.once.Do(func() {
		shared.root, shared.err = os.MkdirTemp("", "verify-test-")
		if shared.err == nil {
			shared.err = runLottery(&shared.lottery)
		}
	})
	if shared.err != nil {
		t.Fatalf("run the lottery: %v", shared.err)
	}
	return &shared.lottery
}

func runLottery(l *lottery) error {
	keys := filepath.Join(l.root, "keys")
	l.store = filepath.Join(l.root, "store")
	for _, dir := range []string{keys, l.store} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
	}
	serverKey, err := secure.GenerateKey(nil)
	if err != nil {
		return err
	}
	pub, sign, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	l.signPub = filepath.Join(keys, secure.VerifyKeyFile)
	writes := []error{
		secure.WritePrivateKey(filepath.Join(keys, secure.ServerKeyFile), "server", serverKey),
		secure.WriteVerifyKey(l.signPub, "server", pub),
	}
	agencyKeys := make([]secure.PrivateKey, len(sizes))
	for i := range sizes {
		if agencyKeys[i], err = secure.GenerateKey(nil); err != nil {
			return err
		}
		writes = append(writes, secure.WritePublicKey(filepath.Join(keys, secure.AgencyPubFile(uint32(i+1))), "agency", agencyKeys[i].Public()))
	}
	if err := errors.Join(writes...); err != nil {
		return err
	}
	ks, err := secure.OpenKeyStore(keys, len(sizes))
	if err != nil {
		return err
	}
	srv, err := eventserver.New(eventserver.Config{Listen: "127.0.0.1:0", Agencies: len(sizes), DataDir: l.store,
		WinningNumber: eventserver.DefaultWinningNumber, Keys: ks, SignKey: sign, ShutdownGrace: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	<-srv.Ready()

	results := make(chan error, len(sizes))
	for i, n := range sizes {
		id := uint32(i + 1)
		bets, err := agency.SyntheticBets(agency.SynthOptions{Agency: id, Bets: n, Winners: winners[i],
			WinningNumber: eventserver.DefaultWinningNumber, Seed: 5})
		if err != nil {
			cancel()
			return err
		}
		var buf bytes.Buffer
		if err := agency.WriteBetsCSV(&buf, bets); err != nil {
			cancel()
			return err
		}
		file := filepath.Join(l.root, fmt.Sprintf("agency-%d.csv", id))
		if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
			cancel()
			return err
		}
		l.files, l.bets = append(l.files, file), append(l.bets, bets)
		l.receipts = append(l.receipts, file+".receipt.json")
		cfg := agency.Config{Agency: id, Servers: []string{srv.Addr()}, Key: &agencyKeys[i], ServerPub: serverKey.Public(),
			SignPub: pub, ReceiptFile: file + ".receipt.json", IOTimeout: 30 * time.Second, GiveUp: 30 * time.Second}
		src := agency.NewSliceSource(bets)
		go func() {
			_, err := agency.Run(ctx, cfg, src)
			results <- err
		}()
	}
	var errs []error
	for range sizes {
		errs = append(errs, <-results)
	}
	cancel()
	errs = append(errs, <-served)
	return errors.Join(errs...)
}

// storeCopy returns a copy of the lottery's store for one test to change.
func (l *lottery) storeCopy(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "store")
	if err := os.CopyFS(dst, os.DirFS(l.store)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// editRows rewrites dir's bets.csv: edit gets the rows (without their CRLF).
func editRows(t *testing.T, dir string, edit func(rows []string) []string) {
	t.Helper()
	path := filepath.Join(dir, filestore.BetsFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSuffix(string(data), "\r\n"), "\r\n")
	rows = edit(rows)
	if err := os.WriteFile(path, []byte(strings.Join(rows, "\r\n")+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rowsOf returns the indexes of agency a's rows, in order.
func rowsOf(rows []string, a int) []int {
	var at []int
	for i, r := range rows {
		if strings.HasPrefix(r, fmt.Sprintf("%d,", a)) {
			at = append(at, i)
		}
	}
	return at
}

type verdict struct {
	code   int
	stdout string
	stderr string
}

func verify(t *testing.T, args ...string) verdict {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	v := verdict{code, out.String(), errOut.String()}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("verify %q: exit %d\nstdout:\n%s\nstderr:\n%s", args, v.code, v.stdout, v.stderr)
		}
	})
	return v
}

// line matches one whole log line whose text after "action: " is pattern.
func line(pattern string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [A-Z]+ action: ` + pattern + `$`)
}

// failedAgencies lists the agencies the fail lines name.
func failedAgencies(stdout string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`(?m)action: verify \| result: fail \| agency: (\d+)`).FindAllStringSubmatch(stdout, -1) {
		out = append(out, m[1])
	}
	return out
}

// Every agency's receipt verifies against its own file, offline, with the
// signing key; without the key the signature is said to be unchecked.
func TestVerifyReceipts(t *testing.T) {
	l := theLottery(t)
	for i := range sizes {
		t.Run(fmt.Sprint("agency ", i+1), func(t *testing.T) {
			v := verify(t, "--receipt", l.receipts[i], "--bets", l.files[i], "--sign-pub", l.signPub)
			want := fmt.Sprintf(`verify \| result: success \| receipt: %s \| agency: %d \| bets: %d \| chain: [0-9a-f]{64} \| signature: valid`,
				regexp.QuoteMeta(l.receipts[i]), i+1, sizes[i])
			if v.code != 0 || !line(want).MatchString(v.stdout) {
				t.Errorf("exit %d, want 0 and a line matching %q", v.code, want)
			}
			v = verify(t, "--receipt", l.receipts[i], "--bets", l.files[i])
			if v.code != 0 || !strings.Contains(v.stdout, "signature: not checked (no --sign-pub)") {
				t.Errorf("without --sign-pub: exit %d, want 0 saying the signature was not checked", v.code)
			}
		})
	}
	t.Run("another agency's file", func(t *testing.T) {
		v := verify(t, "--receipt", l.receipts[0], "--bets", l.files[1], "--sign-pub", l.signPub)
		if v.code != 1 || !line(`verify \| result: fail \| receipt: \S+ \| agency: 1 \| receipt_bets: 40 \| file_bets: 35 \| .*the receipt does not describe this file.*`).MatchString(v.stdout) {
			t.Errorf("exit %d, want 1 and a line saying the receipt does not describe the file", v.code)
		}
	})
}

// The untouched store matches the signed commitment, every receipt and
// every agency's own file.
func TestVerifyStore(t *testing.T) {
	l := theLottery(t)
	commitment := `verify \| result: success \| store: \S+ \| agencies: 5 \| root: [0-9a-f]{64} \| signature: valid \| commitment: every agency's bets in bets.csv are those committed before the draw`
	for _, target := range []string{l.store, filepath.Join(l.store, filestore.BetsFile)} {
		v := verify(t, "--store", target, "--sign-pub", l.signPub)
		if v.code != 0 || !line(commitment).MatchString(v.stdout) {
			t.Errorf("--store %s: exit %d, want 0 and the commitment line", target, v.code)
		}
	}
	v := verify(t, "--store", l.store, "--sign-pub", l.signPub, "--receipts", strings.Join(l.receipts, ","),
		"--agency-files", filepath.Join(l.root, "agency-%d.csv"))
	if v.code != 0 {
		t.Fatalf("with receipts and files: exit %d", v.code)
	}
	for i := range sizes {
		for _, want := range []string{
			fmt.Sprintf(`verify \| result: success \| receipt: \S+ \| agency: %d \| bets: %d \| signature: valid \| store: holds exactly the receipt's bets`, i+1, sizes[i]),
			fmt.Sprintf(`verify \| result: success \| agency: %d \| bets: %d \| cant_ganadores: %d`, i+1, sizes[i], winners[i]),
		} {
			if !line(want).MatchString(v.stdout) {
				t.Errorf("no line matching %q", want)
			}
		}
	}
}

// Tampering with bets.csv after the draw is caught and the agency named;
// the agency's own evidence (its receipt against its file) still holds.
func TestVerifyTamperedStore(t *testing.T) {
	l := theLottery(t)
	tests := []struct {
		name    string
		agency  int
		edit    func(rows []string) []string
		problem string
	}{
		{"winning bet appended for agency 2", 2, func(rows []string) []string {
			return append(rows, fmt.Sprintf("2,Pedro,Tramposo,31415926,1990-01-01,%d", eventserver.DefaultWinningNumber))
		}, "1 bets added to bets.csv after the commitment"},
		{"name changed in agency 3's rows", 3, func(rows []string) []string {
			i := rowsOf(rows, 3)[10]
			fields := strings.SplitN(rows[i], ",", 3)
			rows[i] = fields[0] + ",Otro Nombre," + fields[2]
			return rows
		}, "bets altered in bets.csv after the commitment (same count, different chain)"},
		{"number changed in agency 1's last row", 1, func(rows []string) []string {
			at := rowsOf(rows, 1)
			i := at[len(at)-1]
			rows[i] = rows[i][:strings.LastIndex(rows[i], ",")] + fmt.Sprintf(",%d", eventserver.DefaultWinningNumber)
			return rows
		}, "bets altered"},
		{"one of agency 4's rows deleted", 4, func(rows []string) []string {
			i := rowsOf(rows, 4)[3]
			return append(rows[:i], rows[i+1:]...)
		}, "1 bets removed from bets.csv after the commitment"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := l.storeCopy(t)
			editRows(t, store, tc.edit)
			v := verify(t, "--store", store, "--sign-pub", l.signPub)
			want := fmt.Sprintf(`verify \| result: fail \| agency: %d \| problem: %s.*`, tc.agency, regexp.QuoteMeta(tc.problem))
			if v.code != 1 || !line(want).MatchString(v.stdout) {
				t.Errorf("exit %d, want 1 and a line matching %q", v.code, want)
			}
			if got := failedAgencies(v.stdout); len(got) != 1 || got[0] != fmt.Sprint(tc.agency) {
				t.Errorf("fail lines name agencies %v, want only %d", got, tc.agency)
			}
			// With the agency's receipt the store is caught again, by the receipt.
			r := l.receipts[tc.agency-1]
			v = verify(t, "--store", store, "--sign-pub", l.signPub, "--receipts", r)
			if v.code != 1 || !line(fmt.Sprintf(`verify \| result: fail \| receipt: %s \| agency: %d \| problem: %s.*`,
				regexp.QuoteMeta(r), tc.agency, regexp.QuoteMeta(tc.problem))).MatchString(v.stdout) {
				t.Errorf("with the receipt: exit %d, want 1 naming the receipt and agency %d", v.code, tc.agency)
			}
			// The agency's own evidence is intact.
			v = verify(t, "--receipt", r, "--bets", l.files[tc.agency-1], "--sign-pub", l.signPub)
			if v.code != 0 {
				t.Errorf("--receipt with agency %d's own file: exit %d, want 0", tc.agency, v.code)
			}
		})
	}
}

// --agency-files compares the store with every agency's file row by row.
func TestVerifyAgencyFiles(t *testing.T) {
	l := theLottery(t)
	pattern := filepath.Join(l.root, "agency-%d.csv")
	tests := []struct {
		name string
		edit func([]string) []string
		code int
		want string
	}{
		{"equal", func(r []string) []string { return r }, 0, `verify \| result: success \| agency: 2 \| bets: 35 \| cant_ganadores: 1`},
		{"agency 1's last bet missing", func(r []string) []string {
			at := rowsOf(r, 1)
			return append(r[:at[len(at)-1]], r[at[len(at)-1]+1:]...)
		}, 1, `verify \| result: fail \| agency: 1 \| file: \S+ \| error: store has only 39 bets; file goes on`},
		{"agency 1's bet 0 twice", func(r []string) []string {
			i := rowsOf(r, 1)[0]
			return append(r[:i+1], r[i:]...)
		}, 1, `verify \| result: fail \| agency: 1 \| file: \S+ \| error: bet 1 differs: .*`},
		{"agency 5's last bet twice", func(r []string) []string {
			at := rowsOf(r, 5)
			return append(r, r[at[len(at)-1]])
		}, 1, `verify \| result: fail \| agency: 5 \| file: \S+ \| error: file has 5 bets, store has 6`},
		{"agency 2's bets 3 and 4 swapped", func(r []string) []string {
			at := rowsOf(r, 2)
			r[at[3]], r[at[4]] = r[at[4]], r[at[3]]
			return r
		}, 1, `verify \| result: fail \| agency: 2 \| file: \S+ \| error: bet 3 differs: .*`},
		{"a foreign agency's row", func(r []string) []string {
			return append(r, "9"+r[0][strings.Index(r[0], ","):])
		}, 1, `verify \| result: fail \| agency: 9 \| error: bets.csv holds bets of agency 9, outside 1\.\.5`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := l.storeCopy(t)
			editRows(t, store, tc.edit)
			v := verify(t, "--store", store, "--agency-files", pattern, "--agencies", "5")
			if v.code != tc.code || !line(tc.want).MatchString(v.stdout) {
				t.Errorf("exit %d, want %d and a line matching %q", v.code, tc.code, tc.want)
			}
		})
	}
}

// Forged evidence fails: a receipt or commitment with a flipped byte, or a
// signing key that is not the server's.
func TestVerifyForgedEvidence(t *testing.T) {
	l := theLottery(t)
	dir := t.TempDir()
	wrongKey := filepath.Join(dir, "other-sign.pub")
	otherPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := secure.WriteVerifyKey(wrongKey, "stranger", otherPub); err != nil {
		t.Fatal(err)
	}
	flipped := filepath.Join(dir, "flipped.receipt.json")
	editJSON(t, l.receipts[0], flipped, "signature")
	moreBets := filepath.Join(dir, "more.receipt.json")
	editJSON(t, l.receipts[0], moreBets, "bets")
	store := l.storeCopy(t)
	commitment := filepath.Join(store, filestore.DrawFile)
	editJSON(t, commitment, commitment, "root")

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"receipt signature byte flipped", []string{"--receipt", flipped, "--bets", l.files[0], "--sign-pub", l.signPub},
			`verify \| result: fail \| receipt: \S+ \| agency: 1 \| error: receipt: signature does not verify`},
		{"receipt bets raised", []string{"--receipt", moreBets, "--bets", l.files[0], "--sign-pub", l.signPub},
			`verify \| result: fail \| receipt: \S+ \| agency: 1 \| error: receipt: signature does not verify`},
		{"receipt checked with another key", []string{"--receipt", l.receipts[0], "--bets", l.files[0], "--sign-pub", wrongKey},
			`verify \| result: fail \| receipt: \S+ \| agency: 1 \| error: receipt: signature does not verify`},
		{"store checked with another key", []string{"--store", l.store, "--sign-pub", wrongKey},
			`verify \| result: fail \| commitment: \S+ \| error: commitment: signature does not verify`},
		{"store's receipt checked with another key", []string{"--store", l.store, "--receipts", l.receipts[1], "--sign-pub", wrongKey},
			`verify \| result: fail \| receipt: \S+ \| agency: 2 \| error: receipt: signature does not verify`},
		{"commitment root changed", []string{"--store", store, "--sign-pub", l.signPub},
			`verify \| result: fail \| commitment: \S+ \| error: the leaves give root [0-9a-f]{64}, the statement says [0-9a-f]{64}: merkle proof does not lead to the root`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := verify(t, tc.args...)
			if v.code != 1 || !line(tc.want).MatchString(v.stdout) {
				t.Errorf("exit %d, want 1 and a line matching %q", v.code, tc.want)
			}
		})
	}
}

// editJSON copies the JSON object at src to dst with one byte of field
// changed: a hex string gets its first byte flipped, a number grows by one.
func editJSON(t *testing.T, src, dst, field string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(data, &obj); err != nil {
		t.Fatal(err)
	}
	switch v := obj[field].(type) {
	case string:
		b, err := hex.DecodeString(v)
		if err != nil || len(b) == 0 {
			t.Fatalf("field %s is not hex: %q", field, v)
		}
		b[0] ^= 0x01
		obj[field] = hex.EncodeToString(b)
	case float64:
		obj[field] = v + 1
	default:
		t.Fatalf("field %s is %T", field, v)
	}
	if data, err = json.Marshal(obj); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Before the draw there is no commitment: the store's chains are reported,
// not compared, and that is not a failure.
func TestVerifyStoreBeforeTheDraw(t *testing.T) {
	store, held := storeBeforeTheDraw(t)
	v := verify(t, "--store", store)
	if v.code != 0 || !strings.Contains(v.stdout, "none yet (no draw)") {
		t.Fatalf("exit %d, want 0 saying there is no commitment yet", v.code)
	}
	for i, n := range held {
		if !line(fmt.Sprintf(`verify \| result: success \| agency: %d \| bets: %d \| chain: [0-9a-f]{64}`, i+1, n)).MatchString(v.stdout) {
			t.Errorf("no chain line for agency %d with %d bets", i+1, n)
		}
	}
}

// storeBeforeTheDraw writes a data directory of len(sizes) agencies in
// which two stored bets and one finished, and returns it with the bets
// each agency holds.
func storeBeforeTheDraw(t *testing.T) (string, []int) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	n, winning := len(sizes), uint16(eventserver.DefaultWinningNumber)
	b, err := filestore.Open(dir, filestore.Options{Agencies: n, WinningNumber: winning})
	if err != nil {
		t.Fatal(err)
	}
	w, err := persist.New(b, persist.Options{Agencies: n, WinningNumber: winning})
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	held := make([]int, n)
	held[0], held[1] = 7, 3
	for _, r := range []persist.Request{
		{Agency: 1, Bets: persisttest.Bets(1, 0, 7)},
		{Agency: 2, Bets: persisttest.Bets(2, 0, 3)},
		{Agency: 1, Finish: true, Total: 7},
	} {
		done := make(chan persist.Result, 1)
		r.Done = func(res persist.Result) { done <- res }
		if err := w.Submit(&r); err != nil {
			t.Fatal(err)
		}
		if res := <-done; res.Err != nil {
			t.Fatalf("agency %d: %v", r.Agency, res.Err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, held
}

// Once every agency has finished, or a receipt holds the draw's root, the
// draw has happened: a store without its statement then fails, whatever
// else it holds (here a bet added to it).
func TestVerifyStoreMissingItsCommitment(t *testing.T) {
	l := theLottery(t)
	for _, tc := range []struct {
		name     string
		args     func(store string) []string
		mentions string
	}{
		{"every agency finished", func(store string) []string { return []string{"--store", store} }, "all 5 agencies as finished"},
		{"a receipt holds the root", func(store string) []string {
			if err := os.Remove(filepath.Join(store, filestore.JournalFile)); err != nil {
				t.Fatal(err)
			}
			return []string{"--store", store, "--receipts", l.receipts[0]}
		}, "holds the draw's root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := l.storeCopy(t)
			editRows(t, store, func(rows []string) []string {
				return append(rows, fmt.Sprintf("2,Pedro,Tramposo,31415926,1990-01-01,%d", eventserver.DefaultWinningNumber))
			})
			if err := os.Remove(filepath.Join(store, filestore.DrawFile)); err != nil {
				t.Fatal(err)
			}
			v := verify(t, append(tc.args(store), "--sign-pub", l.signPub)...)
			if v.code != 1 || !strings.Contains(v.stdout, "commitment.json | error: missing, yet") || !strings.Contains(v.stdout, tc.mentions) {
				t.Errorf("exit %d, want 1 naming the missing commitment and %q", v.code, tc.mentions)
			}
		})
	}
}

func TestVerifyUnreadableStore(t *testing.T) {
	v := verify(t, "--store", filepath.Join(t.TempDir(), "none.csv"))
	if v.code != 1 || !strings.Contains(v.stdout, "action: verify | result: fail") {
		t.Fatalf("exit %d, stdout %q", v.code, v.stdout)
	}
}

func TestVerifyBadFlags(t *testing.T) {
	garbage := filepath.Join(t.TempDir(), "garbage.pub")
	if err := os.WriteFile(garbage, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pub")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"nothing to check", nil, "give --receipt FILE --bets FILE, or --store DIR"},
		{"receipt without bets", []string{"--receipt", "r.json"}, "--receipt needs --bets"},
		{"unknown flag", []string{"--stor", "x"}, "unknown flag: --stor"},
		{"sign-pub missing", []string{"--store", "x", "--sign-pub", missing}, "--sign-pub: open " + missing},
		{"sign-pub garbage", []string{"--receipt", "r", "--bets", "b", "--sign-pub", garbage}, "--sign-pub: bad key file " + garbage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := verify(t, tc.args...)
			if v.code != 2 || !strings.Contains(v.stderr, tc.want) || v.stdout != "" {
				t.Errorf("exit %d stderr %q stdout %q, want exit 2, nothing on stdout, stderr naming %q", v.code, v.stderr, v.stdout, tc.want)
			}
		})
	}
	if v := verify(t, "--help"); v.code != 0 || !strings.Contains(v.stderr, "--agency-files") {
		t.Errorf("--help: exit %d, stderr %q", v.code, v.stderr)
	}
}
