// Package probe is the event server's health check client: a plaintext PING
// that needs no agency key and leaves no trace in the store. It depends on
// the frame package only, so the probe binary stays small.
package probe

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"time"

	"github.com/tp0/loteria/frame"
)

// Ping checks that the event server at address answers a PING carrying a
// random payload with a PONG echoing it, all within timeout. It is the
// health check: it needs no HELLO and leaves no trace in the store.
func Ping(address string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout) // one deadline for the dial and the exchange
	conn, err := (&net.Dialer{Deadline: deadline}).Dial("tcp", address)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	payload := make([]byte, 16)
	rand.Read(payload)
	if err := frame.Write(conn, &frame.Ping{Payload: payload}); err != nil {
		return fmt.Errorf("send PING: %w", err)
	}
	var dec frame.Decoder
	f, err := dec.Next(frame.NewReader(conn))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	switch f := f.(type) {
	case *frame.Pong:
		if !bytes.Equal(f.Payload, payload) {
			return fmt.Errorf("PONG carries %x, PING sent %x", f.Payload, payload)
		}
		return nil
	case *frame.Error:
		return fmt.Errorf("server answered ERROR %s: %s", f.Code, f.Reason)
	default:
		return fmt.Errorf("server answered %s instead of PONG", f.Type())
	}
}
