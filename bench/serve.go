package bench

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

// ServeStdlib is the "bench serve-stdlib" command: the baseline server with
// exactly the gnet server's settings (flags, SERVER_* environment, --config).
// The first signal on sigs drains it; it returns the exit status, 0 after a
// clean drain.
func ServeStdlib(args []string, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	cfg, err := eventserver.LoadConfig("bench serve-stdlib", args, stdout, os.LookupEnv)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "serve-stdlib: %v\n", err)
		return 2
	}
	log := cfg.Logger
	defer log.Sync()
	srv, err := NewStdServer(cfg)
	if err != nil {
		log.Error("server_start", logging.Fail, zap.Error(err))
		return 1
	}
	ctx, cancel := shutdown.OnSignal(context.Background(), sigs, log)
	defer cancel()
	if err := srv.Serve(ctx); err != nil {
		log.Error("server_exit", logging.Fail, zap.Error(err))
		return 1
	}
	log.Info("server_exit", logging.Success)
	return 0
}
