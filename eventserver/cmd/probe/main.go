// Command probe checks that an event server answers: it sends a PING with a
// random payload and expects a PONG echoing it. It is the Compose health
// check and the engine of validar-echo-server.sh.
//
// It prints the course's line "action: test_echo_server | result: success"
// (or fail) and exits 0 or 1 to match.
package main

import (
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/internal/logging"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("probe", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "server:12345", "event server address, host:port")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	quiet := fs.Bool("quiet", false, "print nothing; only the exit status tells")
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return 0
		}
		return 2
	}
	log, _ := logging.New("info", logging.FormatConsole, stdout)
	if *quiet {
		log = zap.NewNop()
	}
	if err := eventserver.Ping(*server, *timeout); err != nil {
		log.Error("test_echo_server", logging.Fail, zap.String("server", *server), zap.Error(err))
		return 1
	}
	log.Info("test_echo_server", logging.Success, zap.String("server", *server))
	return 0
}
