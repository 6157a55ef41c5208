package bench

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/tp0/loteria/frame"
)

// Workload is what the bench's agencies upload: the same for every server,
// store and number of front ends a bench invocation compares.
type Workload struct {
	Agencies []int // K values; each run is measured at each
	Bets     int   // per agency
	// TotalBets, when positive, replaces Bets with TotalBets/K per agency so
	// every K moves the same work.
	TotalBets     int
	Batch         int // bets per BETS frame
	Distinct      int // distinct synthetic agencies (datasets) at most
	WinningNumber uint16
	Seed          int64
}

// betsPerAgency is B for a run with k agencies.
func (w *Workload) betsPerAgency(k int) int {
	if w.TotalBets > 0 {
		return max(w.TotalBets/k, 1)
	}
	return w.Bets
}

// check refuses a workload that cannot run; needBets says whether there are
// runs at each K (the end-to-end workloads have their own sizes).
func (w *Workload) check(needBets bool) error {
	for _, k := range w.Agencies {
		if k < 1 {
			return fmt.Errorf("--agencies: %d is not a positive number", k)
		}
	}
	switch {
	case needBets && w.TotalBets <= 0 && w.Bets < 1:
		return fmt.Errorf("--bets must be at least 1, got %d", w.Bets)
	case w.Batch < 1 || w.Batch > 0xFFFF:
		return fmt.Errorf("--batch must be from 1 to 65535 bets, got %d", w.Batch)
	case w.Distinct < 1:
		return fmt.Errorf("--distinct must be at least 1, got %d", w.Distinct)
	case w.WinningNumber > frame.MaxNumber:
		return fmt.Errorf("--winning-number must be from 0 to %d, got %d", frame.MaxNumber, w.WinningNumber)
	}
	return nil
}

// Setup is how the bench runs the servers it measures, in either mode.
type Setup struct {
	ServerBin      string // bin/eventserver
	KeygenBin      string // bin/keygen; empty: the key files must exist already
	DataDir        string // base directory for the runs' directories, the keys and the CSV files
	KeepData       bool   // keep each run's directory (and database)
	ServerLogLevel string // "": the servers' default level
	Insecure       bool   // run the servers --insecure, the agencies in plaintext

	Repeat          int // runs of each variant at each K, taking turns; the median by bets/s is shown
	DialConcurrency int
	Timeout         time.Duration // longest a single run may take
	Log             io.Writer     // progress and notes; nil for none
	TTY             bool          // Log is a terminal: one updating line
}

func (s *Setup) logf(format string, a ...any) {
	if s.Log != nil {
		fmt.Fprintf(s.Log, format+"\n", a...)
	}
}

// check refuses a setup that cannot run.
func (s *Setup) check() error {
	switch {
	case s.DataDir == "":
		return errors.New("--data-dir must not be empty")
	case s.Repeat < 1:
		return fmt.Errorf("--repeat must be at least 1, got %d", s.Repeat)
	case s.Timeout <= 0:
		return fmt.Errorf("--timeout must be positive, got %v", s.Timeout)
	}
	return nil
}

// prepared is what a bench invocation learned and set up before its runs.
type prepared struct {
	Machine   Machine
	Warnings  []string
	Ports     PortRange
	MaxK      int    // the most agencies of any run; 0 for none
	Security  string // Secure or Insecure
	ServerLog string // the servers' log level, as the report names it
}

// prepare raises the open-file limit, checks the machine can hold the
// largest run's connections, makes the data directory and describes the
// machine, with a warning when it is busy or the disk cannot measure fsync.
func (s *Setup) prepare(agencies []int) (*prepared, error) {
	lim, err := RaiseFileLimit()
	if err != nil {
		return nil, err
	}
	p := &prepared{Security: Secure, ServerLog: s.ServerLogLevel}
	if p.Ports, err = ReadPortRange(); err != nil {
		return nil, err
	}
	if len(agencies) > 0 {
		p.MaxK = slices.Max(agencies)
		if err := CheckCapacity(p.MaxK, lim, p.Ports); err != nil {
			return nil, err
		}
	}
	if err := ensureDir(s.DataDir); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if s.Insecure {
		p.Security = Insecure
	}
	if p.ServerLog == "" {
		p.ServerLog = DefaultLogLevel + " (default)"
	}
	m := describeMachine(s.DataDir)
	m.Started = time.Now().UTC().Format(time.RFC3339)
	m.OpenFiles = lim
	m.PortRange = [2]int{p.Ports.Low, p.Ports.High}
	p.Machine = m
	s.logf("open files: soft %d at start (Go raises it at start), now %d, hard %d; ephemeral ports %d-%d (%d per source address)",
		lim.SoftBefore, lim.Soft, lim.Hard, p.Ports.Low, p.Ports.High, p.Ports.Size())
	if m.DataDirFS == "tmpfs" {
		p.Warnings = append(p.Warnings, "the data directory is on tmpfs: fsync costs nothing there, so durability is not measured")
	}
	if la := m.LoadAvgStart; la > 0.5*float64(m.CPUs) {
		p.Warnings = append(p.Warnings, fmt.Sprintf("load average %.1f on %d CPUs at start: the machine was busy, numbers are not reference quality",
			la, m.CPUs))
	}
	return p, nil
}
