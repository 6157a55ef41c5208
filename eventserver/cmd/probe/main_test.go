package main

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tp0/loteria/frame"
)

// fakeServer accepts one connection, reads a PING and answers with reply(ping).
func fakeServer(t *testing.T, reply func(p *frame.Ping) frame.Frame) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var dec frame.Decoder
		f, err := dec.Next(frame.NewReader(c))
		if err != nil {
			return
		}
		p, _ := f.(*frame.Ping)
		if r := reply(p); r != nil {
			frame.Write(c, r)
		}
	}()
	return ln.Addr().String()
}

func TestProbe(t *testing.T) {
	cases := []struct {
		name   string
		reply  func(p *frame.Ping) frame.Frame
		status int
		result string
	}{
		{"echo", func(p *frame.Ping) frame.Frame { return &frame.Pong{Payload: p.Payload} }, 0, "success"},
		{"wrong payload", func(*frame.Ping) frame.Frame { return &frame.Pong{Payload: []byte("other")} }, 1, "fail"},
		{"error frame", func(*frame.Ping) frame.Frame {
			return &frame.Error{Code: frame.CodeShuttingDown, Reason: "draining"}
		}, 1, "fail"},
		{"other frame", func(*frame.Ping) frame.Frame { return &frame.Ack{} }, 1, "fail"},
		{"silence", func(*frame.Ping) frame.Frame { return nil }, 1, "fail"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeServer(t, tc.reply)
			var out, errOut bytes.Buffer
			status := run([]string{"--server", addr, "--timeout", "1s"}, &out, &errOut)
			if status != tc.status {
				t.Fatalf("status %d, want %d; output %q", status, tc.status, out.String())
			}
			want := "action: test_echo_server | result: " + tc.result
			if !strings.Contains(out.String(), want) {
				t.Fatalf("output %q lacks %q", out.String(), want)
			}
		})
	}
}

func TestProbeServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var out, errOut bytes.Buffer
	start := time.Now()
	if status := run([]string{"--server", addr, "--timeout", "1s"}, &out, &errOut); status != 1 {
		t.Fatalf("status %d, want 1", status)
	}
	if !strings.Contains(out.String(), "action: test_echo_server | result: fail") {
		t.Fatalf("output %q", out.String())
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("probe did not respect its timeout")
	}
}

func TestProbeQuietAndBadFlags(t *testing.T) {
	addr := fakeServer(t, func(p *frame.Ping) frame.Frame { return &frame.Pong{Payload: p.Payload} })
	var out, errOut bytes.Buffer
	if status := run([]string{"--server", addr, "--quiet"}, &out, &errOut); status != 0 || out.Len() != 0 {
		t.Fatalf("quiet: status %d, output %q", status, out.String())
	}
	if status := run([]string{"--timeout", "soon"}, &out, &errOut); status != 2 {
		t.Fatalf("bad flag: status %d, want 2", status)
	}
}
