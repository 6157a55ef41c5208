// Command gendata writes deterministic synthetic bet files, agency-<i>.csv,
// in the course's CSV format, so the system can be run without the course dataset.
//
// Existing files are kept unless --force is given; each file is written
// atomically. Bad flags exit with status 2, write failures with status 1.
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
)

const defaultWinningNumber = 7574

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// plan is one file to write.
type plan struct {
	path string
	opts agency.SynthOptions
}

func run(args []string, stdout, stderr io.Writer) int {
	plans, force, err := parse(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gendata: %v\n", err)
		return 2
	}
	log, err := logging.New("info", logging.FormatConsole, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "gendata: %v\n", err)
		return 1
	}
	defer func() { _ = log.Sync() }()

	for _, p := range plans {
		fields := []zap.Field{zap.String("file", p.path), zap.Int("bets", p.opts.Bets), zap.Int("winners", p.opts.Winners)}
		written, err := writeFile(p, force)
		switch {
		case err != nil:
			log.Error("gendata", append([]zap.Field{logging.Fail, zap.Error(err)}, fields...)...)
			return 1
		case !written:
			log.Info("gendata", logging.Success, zap.String("file", p.path),
				zap.String("kept", "file exists and was not changed (use --force to regenerate)"))
		default:
			log.Info("gendata", append([]zap.Field{logging.Success}, fields...)...)
		}
	}
	return 0
}

// parse reads the flags into one plan per agency.
func parse(args []string, stderr io.Writer) ([]plan, bool, error) {
	flags := pflag.NewFlagSet("gendata", pflag.ContinueOnError)
	flags.SetOutput(stderr)
	dir := flags.String("dir", ".data", "directory for the agency-<i>.csv files (created if missing)")
	agencies := flags.Int("agencies", len(agency.CourseSizes), "number of agency files to write")
	sizes := flags.String("sizes", joinInts(agency.CourseSizes), "bets per agency, comma separated; cycled when --agencies is larger")
	winners := flags.String("winners", joinInts(agency.CourseWinners), "winning bets per agency, comma separated; cycled when --agencies is larger")
	winning := flags.Int("winning-number", defaultWinningNumber, "the number that wins the draw (0-9999)")
	seed := flags.Int64("seed", 1, "seed of the generator; the same flags always write the same bytes")
	force := flags.Bool("force", false, "overwrite existing files")
	if err := flags.Parse(args); err != nil {
		return nil, false, err
	}
	if flags.NArg() > 0 {
		return nil, false, fmt.Errorf("unexpected argument %q (all settings are flags)", flags.Arg(0))
	}
	if *dir == "" {
		return nil, false, errors.New("invalid --dir: empty")
	}
	if *agencies < 1 {
		return nil, false, fmt.Errorf("invalid --agencies %d: want at least 1", *agencies)
	}
	if *winning < 0 || *winning > frame.MaxNumber {
		return nil, false, fmt.Errorf("invalid --winning-number %d: want 0 to %d", *winning, frame.MaxNumber)
	}
	sizeList, err := parseInts("sizes", *sizes)
	if err != nil {
		return nil, false, err
	}
	winnerList, err := parseInts("winners", *winners)
	if err != nil {
		return nil, false, err
	}
	plans := make([]plan, *agencies)
	for i := range plans {
		o := agency.SynthOptions{
			Agency:        uint32(i + 1),
			Bets:          sizeList[i%len(sizeList)],
			Winners:       winnerList[i%len(winnerList)],
			WinningNumber: uint16(*winning),
			Seed:          *seed,
		}
		if o.Winners > o.Bets {
			return nil, false, fmt.Errorf("invalid --winners: agency %d would have %d winners but only %d bets (--sizes)",
				o.Agency, o.Winners, o.Bets)
		}
		plans[i] = plan{path: filepath.Join(*dir, "agency-"+strconv.Itoa(i+1)+".csv"), opts: o}
	}
	return plans, *force, nil
}

// parseInts reads a comma separated list of non-negative integers given to --name.
func parseInts(name, s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("invalid --%s: empty list", name)
	}
	parts := strings.Split(s, ",")
	out := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("invalid --%s %q: %q is not a non-negative integer", name, s, p)
		}
		out[i] = n
	}
	return out, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// writeFile generates p's bets into a temporary file next to p.path, syncs it
// and moves it into place. Without force an existing file is never replaced;
// written reports whether the file was created or replaced.
func writeFile(p plan, force bool) (written bool, err error) {
	if !force {
		if _, err := os.Lstat(p.path); err == nil {
			return false, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("check %s: %w", p.path, err)
		}
	}
	bets, err := agency.SyntheticBets(p.opts)
	if err != nil {
		return false, err
	}
	dir := filepath.Dir(p.path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(p.path)+".*.tmp")
	if err != nil {
		return false, fmt.Errorf("create temporary file: %w", err)
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name()) // gone already once linked or renamed
	}()
	if err := agency.WriteBetsCSV(tmp, bets); err != nil {
		return false, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return false, fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return false, fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if written, err = install(tmp.Name(), p.path, force); err != nil || !written {
		return written, err
	}
	return true, syncDir(dir)
}

// install puts tmp at path. Without force it hard-links, which fails rather
// than replace a file created since the check; on file systems without hard
// links it falls back to rename after checking again.
func install(tmp, path string, force bool) (bool, error) {
	if !force {
		err := os.Link(tmp, path)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, fs.ErrExist):
			return false, nil
		}
		if _, err := os.Lstat(path); err == nil {
			return false, nil
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("rename to %s: %w", path, err)
	}
	return true, nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
