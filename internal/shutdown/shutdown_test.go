package shutdown

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tp0/loteria/internal/logging"
)

func TestOnSignalCancelsAndLogs(t *testing.T) {
	defer goleak.VerifyNone(t)
	var out strings.Builder
	log, err := logging.New("info", "console", &out)
	if err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 1)
	ctx, cancel := OnSignal(context.Background(), sigs, log)
	defer cancel()
	if SignalName(ctx) != "" {
		t.Fatal("signal name before any signal")
	}
	sigs <- syscall.SIGTERM
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("context not cancelled by the signal")
	}
	if got := SignalName(ctx); got != "terminated" {
		t.Errorf("SignalName = %q, want terminated", got)
	}
	if !strings.Contains(out.String(), "action: signal | result: success | signal: terminated") {
		t.Errorf("log %q lacks the signal line", out.String())
	}
}

func TestCancelWithoutSignal(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := OnSignal(context.Background(), nil, nil)
	cancel()
	<-ctx.Done()
	if SignalName(ctx) != "" {
		t.Errorf("SignalName = %q after a plain cancel", SignalName(ctx))
	}
}
