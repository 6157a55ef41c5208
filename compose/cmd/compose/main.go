// Command compose writes the Docker Compose file for the lottery server and
// N agencies (see package compose).
//
//	compose --agencies 5 --output docker-compose-dev.yaml
//
// Without --output (or with "-") the file goes to stdout. A file is written
// to a temporary file beside it and renamed into place, so a failed run
// leaves any previous file as it was. Exit status: 0 ok, 1 write failure,
// 2 bad arguments.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/tp0/loteria/compose"
)

const (
	exitWrite = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	flags := pflag.NewFlagSet("compose", pflag.ContinueOnError)
	flags.SetOutput(stderr)
	agencies := flags.String("agencies", "", "number of agency services to generate (0.."+strconv.Itoa(compose.MaxAgencies)+")")
	output := flags.String("output", "-", `file to write, "-" for stdout`)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "compose: %v\n", err)
		flags.PrintDefaults()
		return exitUsage
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "compose: unexpected argument %q\n", flags.Arg(0))
		return exitUsage
	}
	// Parsed in base 10 here: pflag's int flags would read "010" as octal.
	n, err := strconv.Atoi(*agencies)
	if err != nil || n < 0 || n > compose.MaxAgencies {
		fmt.Fprintf(stderr, "compose: --agencies must be an integer in 0..%d, got %q\n", compose.MaxAgencies, *agencies)
		return exitUsage
	}
	if *output == "" {
		fmt.Fprintln(stderr, `compose: --output must be a file path or "-"`)
		return exitUsage
	}

	var buf bytes.Buffer
	if err := compose.Generate(&buf, compose.Options{Agencies: n}); err != nil {
		fmt.Fprintf(stderr, "compose: %v\n", err)
		return exitUsage
	}
	if *output == "-" {
		if _, err := stdout.Write(buf.Bytes()); err != nil {
			fmt.Fprintf(stderr, "compose: write stdout: %v\n", err)
			return exitWrite
		}
		return 0
	}
	if err := writeFileAtomic(*output, buf.Bytes()); err != nil {
		fmt.Fprintf(stderr, "compose: %v\n", err)
		return exitWrite
	}
	return 0
}

// writeFileAtomic replaces path with data through a temporary file in the
// same directory, so readers see either the old file or the whole new one.
func writeFileAtomic(path string, data []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
