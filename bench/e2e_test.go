package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tp0/loteria/agency"
)

func TestFindLineTakesTheLastMatchingLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agency-1.log")
	log := strings.Join([]string{
		"2026-12-02 00:30:11 INFO action: config | result: success | id: 1",
		"2026-12-02 00:30:11 INFO action: consulta_ganadores | result: in_progress | agency: 1 | finished: 3",
		"2026-12-02 00:30:12 INFO action: consulta_ganadores | result: success | agency: 1 | cant_ganadores: 2 | root: ab12 | dni: 30904465,00000042",
		"2026-12-02 00:30:12 INFO action: exit | result: success | agency: 1",
	}, "\n") + "\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := findLine(path, "consulta_ganadores", "success")
	if err != nil {
		t.Fatal(err)
	}
	if f["cant_ganadores"] != "2" || f["root"] != "ab12" || f["dni"] != "30904465,00000042" || f["agency"] != "1" {
		t.Errorf("fields %v", f)
	}
	if _, err := findLine(path, "consulta_ganadores", "fail"); err == nil || !strings.Contains(err.Error(), "no \"consulta_ganadores\" line") {
		t.Errorf("a missing line: %v", err)
	}
	if _, err := findLine(filepath.Join(t.TempDir(), "none.log"), "exit", "success"); err == nil {
		t.Error("a missing file passed")
	}
}

func TestReadAgencyFile(t *testing.T) {
	bets := someBets(t, 3, 50)
	bets[7].Number, bets[20].Number = 1234, 1234
	var b strings.Builder
	if err := agency.WriteBetsCSV(&b, bets); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agency-3.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	want, winners, err := readAgencyFile(path, 1234)
	if err != nil {
		t.Fatal(err)
	}
	var expect []string
	for _, x := range bets {
		if x.Number == 1234 {
			expect = append(expect, x.Document)
		}
	}
	if want.Bets != 50 || want != wantFromBets(bets) || strings.Join(winners, ",") != strings.Join(expect, ",") || len(expect) < 2 {
		t.Errorf("read %+v, winners %v; want 50 bets, their chain, winners %v", want, winners, expect)
	}
}

func TestMedianOfWallTimes(t *testing.T) {
	if m := median([]float64{0.3, 0.5, 0.9}); m != 0.5 {
		t.Errorf("median = %v", m)
	}
	if median(nil) != 0 {
		t.Error("median of nothing")
	}
}
