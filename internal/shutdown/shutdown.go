// Package shutdown turns the first SIGTERM or SIGINT into a cancelled
// context, logged, so every binary drains the same way.
package shutdown

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/tp0/loteria/internal/logging"
)

// Notify returns a channel that receives SIGTERM and SIGINT.
func Notify() <-chan os.Signal {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	return sigs
}

// SignalError is the cause of a context cancelled by a signal.
type SignalError struct{ Signal os.Signal }

func (e *SignalError) Error() string { return "received " + e.Signal.String() }

// OnSignal returns a context cancelled by the first signal on sigs (nil
// means none), after logging `action: signal | result: success`; its cause
// is then a *SignalError. After that first signal the default handling is
// back, so a second one kills the process. The cancel func releases the
// watcher.
func OnSignal(parent context.Context, sigs <-chan os.Signal, log *zap.Logger, fields ...zap.Field) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	go func() {
		select {
		case sig := <-sigs:
			signal.Reset(syscall.SIGTERM, syscall.SIGINT)
			log.Info("signal", append([]zap.Field{logging.Success, zap.String("signal", sig.String())}, fields...)...)
			cancel(&SignalError{Signal: sig})
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

// SignalName is the name of the signal that cancelled ctx, or "" when ctx
// was not cancelled by one.
func SignalName(ctx context.Context) string {
	var se *SignalError
	if errors.As(context.Cause(ctx), &se) {
		return se.Signal.String()
	}
	return ""
}
