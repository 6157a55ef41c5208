// Command eventserver runs the lottery's central server.
//
// Settings come from flags, then SERVER_* environment variables, then the
// YAML file named by --config, then defaults. Bad settings exit with status 2.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/internal/config"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/internal/shutdown"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv, shutdown.Notify()))
}

// run is the whole program; the first signal on sigs starts a graceful
// drain, and a second one kills the process the default way.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) (string, bool), sigs <-chan os.Signal) int {
	cfg, log, err := load(args, stdout, env)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "eventserver: %v\n", err)
		return 2
	}
	defer log.Sync()
	srv, err := eventserver.New(cfg)
	if err != nil {
		log.Error("server_start", logging.Fail, zap.Error(err))
		return 1
	}
	ctx, cancel := shutdown.OnSignal(ctx, sigs, log)
	defer cancel()
	if err := srv.Serve(ctx); err != nil {
		log.Error("server_exit", logging.Fail, zap.Error(err))
		return 1
	}
	log.Info("server_exit", logging.Success)
	return 0
}

func load(args []string, stdout io.Writer, env func(string) (string, bool)) (eventserver.Config, *zap.Logger, error) {
	cfg, err := eventserver.LoadConfig("eventserver", args, stdout, env)
	return cfg, cfg.Logger, err
}
