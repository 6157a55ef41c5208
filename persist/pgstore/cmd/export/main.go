// Command export writes the bets a PostgreSQL store holds as bets.csv, in
// the exact format of the file store (the course's CSV: agency, first name,
// last name, document, birthdate, number; Python csv QUOTE_MINIMAL, CRLF).
//
//	export --store postgres://user@host:5432/db --output bets.csv
//
// Rows come agency by agency, each agency's in stream order, from one
// consistent snapshot; every agency's rows are checked against its count
// and chain value on record first. The file is written to a temporary name,
// synced and renamed, so a failed export leaves no partial bets.csv.
// --output - writes to standard output. Bad flags exit with status 2, a
// failed export with status 1.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/internal/shutdown"
	"github.com/tp0/loteria/persist/pgstore"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv, shutdown.Notify()))
}

// run is the whole program; a signal on sigs stops the export, leaving no file.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) (string, bool), sigs <-chan os.Signal) int {
	fs := pflag.NewFlagSet("export", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	store := fs.String("store", "", "the servers' database, postgres://user[:password]@host:port/database (default $SERVER_STORE)")
	output := fs.String("output", "bets.csv", "file to write; - for standard output")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: export --store URL [--output FILE]\n"+
			"Writes the PostgreSQL store's bets as bets.csv, in the file store's format.\n\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "export: unexpected argument %q (all settings are flags)\n", fs.Arg(0))
		return 2
	}
	if *store == "" {
		*store, _ = env("SERVER_STORE")
	}
	if *store == "" {
		fmt.Fprintln(stderr, "export: give --store postgres://... (or set SERVER_STORE)")
		return 2
	}
	cfg, err := pgstore.ParseURL(*store)
	if err != nil {
		fmt.Fprintf(stderr, "export: --store: %v\n", err)
		return 2
	}
	if *output == "" {
		fmt.Fprintln(stderr, "export: --output must not be empty")
		return 2
	}
	logOut := stdout
	if *output == "-" {
		logOut = stderr // the rows go to stdout
	}
	log, err := logging.New("info", logging.FormatConsole, logOut)
	if err != nil {
		fmt.Fprintf(stderr, "export: %v\n", err)
		return 1
	}
	defer func() { _ = log.Sync() }()
	ctx, cancel := shutdown.OnSignal(ctx, sigs, log)
	defer cancel()

	start := time.Now()
	target := pgstore.Target(cfg)
	log.Info("export", logging.InProgress, zap.String("database", target), zap.String("output", *output))
	var st pgstore.ExportStats
	if *output == "-" {
		w := bufio.NewWriterSize(stdout, 256<<10)
		if st, err = pgstore.Export(ctx, *store, w); err == nil {
			err = w.Flush()
		}
	} else {
		st, err = exportFile(ctx, *store, *output)
	}
	if err != nil {
		log.Error("export", logging.Fail, zap.String("database", target), zap.String("output", *output), zap.Error(err))
		return 1
	}
	log.Info("export", logging.Success, zap.String("database", target), zap.String("output", *output),
		zap.Int("agencies", st.Agencies), zap.Int("finished", st.Finished), zap.Int64("rows", st.Rows),
		zap.Int64("bytes", st.Bytes), zap.Duration("took", time.Since(start)))
	return 0
}

// exportFile writes the export to a temporary file beside path, syncs it
// and renames it over path.
func exportFile(ctx context.Context, url, path string) (pgstore.ExportStats, error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return pgstore.ExportStats{}, fmt.Errorf("create %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	st, err := pgstore.Export(ctx, url, tmp)
	if err != nil {
		tmp.Close()
		return st, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return st, fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return st, fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return st, fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return st, fmt.Errorf("rename %s to %s: %w", tmp.Name(), path, err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return st, fmt.Errorf("sync directory %s: %w", dir, err)
		}
	}
	return st, nil
}
