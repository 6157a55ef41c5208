// Command verify checks a server's bets.csv against the agencies' own files:
// every agency's stored bets must be exactly its file's rows, in order, once.
// It prints one action line per agency and exits 1 on any difference.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("verify", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	store := fs.String("store", "bets.csv", "the server's bets.csv")
	pattern := fs.String("agency-files", ".data/agency-%d.csv", "agency file names, %d is the agency id")
	agencies := fs.Int("agencies", 5, "agencies 1..N to check")
	winning := fs.Uint16("winning-number", 7574, "winning number, to report winners per agency")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	log, _ := logging.New("info", logging.FormatConsole, stdout)
	stored, err := byAgency(*store)
	if err != nil {
		log.Error("verify", logging.Fail, zap.String("store", *store), zap.Error(err))
		return 1
	}
	ok := true
	for a := 1; a <= *agencies; a++ {
		path := fmt.Sprintf(*pattern, a)
		winners, err := compare(path, stored[uint32(a)], *winning)
		n := len(stored[uint32(a)])
		delete(stored, uint32(a))
		if err != nil {
			ok = false
			log.Error("verify", logging.Fail, zap.Int("agency", a), zap.String("file", path), zap.Error(err))
			continue
		}
		log.Info("verify", logging.Success, zap.Int("agency", a), zap.Int("bets", n),
			zap.Int("cant_ganadores", winners))
	}
	for a, bets := range stored {
		ok = false
		log.Error("verify", logging.Fail, zap.Uint32("agency", a), zap.Int("bets", len(bets)),
			zap.String("error", "bets stored for an agency outside the checked range"))
	}
	if !ok {
		return 1
	}
	return 0
}

func byAgency(path string) (map[uint32][]frame.Bet, error) {
	out := map[uint32][]frame.Bet{}
	for b, err := range persist.LoadBetsFile(path) {
		if err != nil {
			return nil, err
		}
		out[b.Agency] = append(out[b.Agency], b.Bet)
	}
	return out, nil
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
		if persist.HasWon(persist.Bet{Bet: want}, winning) {
			winners++
		}
	}
}
