// Command verify checks a lottery's evidence offline, with no server:
//
//	verify --receipt FILE --bets FILE [--sign-pub FILE]
//	    an agency's receipt against the agency's own CSV file;
//	verify --store DIR [--sign-pub FILE] [--receipts FILE,...] [--agency-files PATTERN --agencies N]
//	    a server's data directory: every agency's chain recomputed from
//	    bets.csv against the draw's signed commitment (commitment.json), the
//	    agencies' receipts, and, given their files, the agencies' own rows.
//
// It prints one action line per check and exits 1 when any fails.
package main

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/receipt"
	"github.com/tp0/loteria/secure"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("verify", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	receiptPath := fs.String("receipt", "", "an agency's receipt, checked against --bets")
	bets := fs.String("bets", "", "the agency's CSV file, for --receipt")
	store := fs.String("store", "", "a server's data directory (or its bets.csv)")
	signPub := fs.String("sign-pub", "", "the server's signing key (server-sign.pub); without it signatures are not checked")
	receipts := fs.StringSlice("receipts", nil, "agencies' receipts to compare with --store (comma-separated or repeated)")
	pattern := fs.String("agency-files", "", "agency file names, %d is the agency id, to compare with --store row by row")
	agencies := fs.Int("agencies", 0, "agencies 1..N to compare with --agency-files (default: the lottery's)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "verify: %v\n", err) // pflag prints nothing itself with ContinueOnError
		return 2
	}
	log, _ := logging.New("info", logging.FormatConsole, stdout)
	var pub ed25519.PublicKey
	if *signPub != "" {
		var err error
		if pub, err = secure.LoadVerifyKey(*signPub); err != nil {
			fmt.Fprintf(stderr, "verify: --sign-pub: %v\n", err)
			return 2
		}
	}
	v := &verifier{log: log, pub: pub, ok: true}
	switch {
	case *receiptPath != "" && *store == "":
		if *bets == "" {
			fmt.Fprintln(stderr, "verify: --receipt needs --bets, the agency's CSV file")
			return 2
		}
		v.receiptAgainstFile(*receiptPath, *bets)
	case *store != "":
		if *receiptPath != "" {
			*receipts = append(*receipts, *receiptPath)
		}
		v.store(*store, *receipts, *pattern, *agencies)
	default:
		fmt.Fprintln(stderr, "verify: give --receipt FILE --bets FILE, or --store DIR")
		return 2
	}
	if !v.ok {
		return 1
	}
	return 0
}

type verifier struct {
	log *zap.Logger
	pub ed25519.PublicKey
	ok  bool
}

func (v *verifier) fail(fields ...zap.Field) {
	v.ok = false
	v.log.Error("verify", append([]zap.Field{logging.Fail}, fields...)...)
}

func (v *verifier) signature() zap.Field {
	if v.pub == nil {
		return zap.String("signature", "not checked (no --sign-pub)")
	}
	return zap.String("signature", "valid")
}

// receiptAgainstFile checks that the receipt's count and chain are those of
// the agency's own file, and that the server signed it.
func (v *verifier) receiptAgainstFile(path, bets string) {
	f, err := receipt.ReadFile(path)
	if err != nil {
		v.fail(zap.String("receipt", path), zap.Error(err))
		return
	}
	r := f.Receipt
	if v.pub != nil {
		if err := r.Verify(v.pub); err != nil {
			v.fail(zap.String("receipt", path), zap.Uint32("agency", r.Agency), zap.Error(err))
			return
		}
	}
	n, chain, err := fileChain(bets)
	if err != nil {
		v.fail(zap.String("bets", bets), zap.Error(err))
		return
	}
	if n != r.Bets || chain != r.Chain {
		v.fail(zap.String("receipt", path), zap.Uint32("agency", r.Agency), zap.Uint64("receipt_bets", r.Bets),
			zap.Uint64("file_bets", n), zap.String("receipt_chain", hex.EncodeToString(r.Chain[:])),
			zap.String("file_chain", hex.EncodeToString(chain[:])),
			zap.String("error", "the receipt does not describe this file: the server acknowledged other bets"))
		return
	}
	v.log.Info("verify", logging.Success, zap.String("receipt", path), zap.Uint32("agency", r.Agency),
		zap.Uint64("bets", n), zap.String("chain", hex.EncodeToString(chain[:])), v.signature())
}

// fileChain reads an agency's CSV file as the agency does and returns its
// bet count and chain.
func fileChain(path string) (uint64, frame.Hash, error) {
	src, err := agency.OpenFile(path)
	if err != nil {
		return 0, frame.Hash{}, err
	}
	defer src.Close()
	c := receipt.NewChain()
	for {
		b, err := src.Next()
		if errors.Is(err, io.EOF) {
			return c.Len(), c.Sum(), nil
		}
		if err != nil {
			return 0, frame.Hash{}, err
		}
		c.Add(&b)
	}
}

// stored is one agency's bets as bets.csv holds them.
type stored struct {
	chain *receipt.Chain
	bets  []frame.Bet
}

func (v *verifier) store(path string, receipts []string, pattern string, agencies int) {
	dir := path
	if strings.HasSuffix(path, ".csv") {
		dir = filepath.Dir(path)
	}
	lot, err := filestore.ReadLottery(dir)
	if err != nil {
		v.fail(zap.String("store", dir), zap.Error(err))
		return
	}
	byAgency := map[uint32]*stored{}
	for b, err := range filestore.LoadBetsFile(filepath.Join(dir, filestore.BetsFile)) {
		if err != nil {
			v.fail(zap.String("store", dir), zap.Error(err))
			return
		}
		s := byAgency[b.Agency]
		if s == nil {
			s = &stored{chain: receipt.NewChain()}
			byAgency[b.Agency] = s
		}
		s.chain.Add(&b.Bet)
		if pattern != "" {
			s.bets = append(s.bets, b.Bet)
		}
	}
	for a := range byAgency {
		if a < 1 || int(a) > lot.Agencies {
			v.fail(zap.Uint32("agency", a), zap.String("error", fmt.Sprintf("bets.csv holds bets of agency %d, outside 1..%d", a, lot.Agencies)))
		}
	}
	leaf := func(a uint32) receipt.Leaf {
		if s := byAgency[a]; s != nil {
			return receipt.Leaf{Agency: a, Bets: s.chain.Len(), Chain: s.chain.Sum()}
		}
		return receipt.Leaf{Agency: a, Chain: receipt.Empty()}
	}
	v.commitment(dir, lot, leaf, receipts)
	for _, path := range receipts {
		v.receiptAgainstStore(path, lot, leaf)
	}
	if pattern != "" {
		if agencies <= 0 {
			agencies = lot.Agencies
		}
		v.files(pattern, agencies, byAgency, lot.WinningNumber)
	}
}

// drawDue says why the store in dir must hold its draw's statement: every
// agency's FINISHED is in its journal, or a receipt holds the draw's root;
// "" when nothing says the draw happened.
func drawDue(dir string, agencies int, receipts []string) string {
	if n, err := filestore.FinishedAgencies(dir); err == nil && n >= agencies {
		return fmt.Sprintf("the journal records all %d agencies as finished", agencies)
	}
	for _, path := range receipts {
		if f, err := receipt.ReadFile(path); err == nil && f.Root != nil {
			return fmt.Sprintf("receipt %s holds the draw's root %x", path, f.Root[:])
		}
	}
	return ""
}

// commitment recomputes every leaf from bets.csv and compares them with the
// draw's signed statement.
func (v *verifier) commitment(dir string, lot filestore.Lottery, leaf func(uint32) receipt.Leaf, receipts []string) {
	data, err := os.ReadFile(filepath.Join(dir, filestore.DrawFile))
	if errors.Is(err, fs.ErrNotExist) {
		if why := drawDue(dir, lot.Agencies, receipts); why != "" {
			v.fail(zap.String("commitment", filepath.Join(dir, filestore.DrawFile)),
				zap.String("error", "missing, yet "+why+": it was deleted, or the server stopped between the last "+
					"FINISHED and the draw (start it once on this directory and it draws)"))
			return
		}
		v.log.Info("verify", logging.Success, zap.String("store", dir), zap.String("commitment",
			"none yet (no draw): the store's chains are reported but not compared"))
		for a := uint32(1); a <= uint32(lot.Agencies); a++ {
			l := leaf(a)
			v.log.Info("verify", logging.Success, zap.Uint32("agency", a), zap.Uint64("bets", l.Bets),
				zap.String("chain", hex.EncodeToString(l.Chain[:])))
		}
		return
	}
	var st receipt.Statement
	if err == nil {
		err = st.UnmarshalJSON(data)
	}
	if err == nil {
		err = st.Check(v.pub)
	}
	if err == nil && st.Lottery != lot.ID {
		err = fmt.Errorf("the commitment is for lottery %x, lottery.json says %x", st.Lottery, lot.ID)
	}
	if err == nil && int(st.Agencies) != lot.Agencies {
		err = fmt.Errorf("the commitment covers %d agencies, lottery.json says %d", st.Agencies, lot.Agencies)
	}
	if err != nil {
		v.fail(zap.String("commitment", filepath.Join(dir, filestore.DrawFile)), zap.Error(err))
		return
	}
	bad := 0
	for _, signed := range st.Leaves {
		got := leaf(signed.Agency)
		if got == signed {
			continue
		}
		bad++
		v.fail(zap.Uint32("agency", signed.Agency), zap.String("problem", change(signed, got)),
			zap.Uint64("committed_bets", signed.Bets), zap.Uint64("store_bets", got.Bets),
			zap.String("committed_chain", hex.EncodeToString(signed.Chain[:])),
			zap.String("store_chain", hex.EncodeToString(got.Chain[:])))
	}
	if bad == 0 {
		v.log.Info("verify", logging.Success, zap.String("store", dir), zap.Int("agencies", lot.Agencies),
			zap.String("root", hex.EncodeToString(st.Root[:])), v.signature(),
			zap.String("commitment", "every agency's bets in bets.csv are those committed before the draw"))
	}
}

// change says how the store's leaf differs from the committed one.
func change(committed, now receipt.Leaf) string {
	switch {
	case now.Bets > committed.Bets:
		return fmt.Sprintf("%d bets added to bets.csv after the commitment", now.Bets-committed.Bets)
	case now.Bets < committed.Bets:
		return fmt.Sprintf("%d bets removed from bets.csv after the commitment", committed.Bets-now.Bets)
	}
	return "bets altered in bets.csv after the commitment (same count, different chain)"
}

func (v *verifier) receiptAgainstStore(path string, lot filestore.Lottery, leaf func(uint32) receipt.Leaf) {
	f, err := receipt.ReadFile(path)
	if err != nil {
		v.fail(zap.String("receipt", path), zap.Error(err))
		return
	}
	r := f.Receipt
	if v.pub != nil {
		if err := r.Verify(v.pub); err != nil {
			v.fail(zap.String("receipt", path), zap.Uint32("agency", r.Agency), zap.Error(err))
			return
		}
	}
	if r.Lottery != lot.ID {
		v.fail(zap.String("receipt", path), zap.Uint32("agency", r.Agency),
			zap.String("error", "the receipt is from another lottery"))
		return
	}
	got := leaf(r.Agency)
	if want := (receipt.Leaf{Agency: r.Agency, Bets: r.Bets, Chain: r.Chain}); got != want {
		v.fail(zap.String("receipt", path), zap.Uint32("agency", r.Agency), zap.String("problem", change(want, got)),
			zap.Uint64("receipt_bets", r.Bets), zap.Uint64("store_bets", got.Bets))
		return
	}
	v.log.Info("verify", logging.Success, zap.String("receipt", path), zap.Uint32("agency", r.Agency),
		zap.Uint64("bets", r.Bets), v.signature(), zap.String("store", "holds exactly the receipt's bets"))
}

// files compares every agency's stored bets with its own file, row by row.
func (v *verifier) files(pattern string, agencies int, byAgency map[uint32]*stored, winning uint16) {
	for a := uint32(1); a <= uint32(agencies); a++ {
		path := fmt.Sprintf(pattern, a)
		var bets []frame.Bet
		if s := byAgency[a]; s != nil {
			bets = s.bets
		}
		winners, err := compare(path, bets, winning)
		if err != nil {
			v.fail(zap.Uint32("agency", a), zap.String("file", path), zap.Error(err))
			continue
		}
		v.log.Info("verify", logging.Success, zap.Uint32("agency", a), zap.Int("bets", len(bets)),
			zap.Int("cant_ganadores", winners))
	}
}

// compare walks the agency's file and its stored bets side by side.
func compare(path string, stored []frame.Bet, winning uint16) (int, error) {
	src, err := agency.OpenFile(path)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	winners := 0
	for i := 0; ; i++ {
		want, err := src.Next()
		if errors.Is(err, io.EOF) {
			if i != len(stored) {
				return 0, fmt.Errorf("file has %d bets, store has %d", i, len(stored))
			}
			return winners, nil
		}
		if err != nil {
			return 0, err
		}
		if i >= len(stored) {
			return 0, fmt.Errorf("store has only %d bets; file goes on", len(stored))
		}
		if stored[i] != want {
			return 0, fmt.Errorf("bet %d differs: stored %+v, file %+v", i, stored[i], want)
		}
		if want.Number == winning {
			winners++
		}
	}
}
