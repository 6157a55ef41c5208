package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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

// httpServer serves h on a loopback port for the test's lifetime.
func httpServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestProbeHTTP(t *testing.T) {
	cases := []struct {
		name    string
		handler http.HandlerFunc
		status  int
		want    []string // in the output
	}{
		{"ready", func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || r.URL.Path != "/readyz" {
				http.Error(w, "wrong request "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
				return
			}
			io.WriteString(w, "ok\n")
		}, 0, []string{"action: http_check | result: success", "/readyz", "status: 200"}},
		{"not ready", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "store failed: disk full\nsecond line", http.StatusServiceUnavailable)
		}, 1, []string{"action: http_check | result: fail", "status: 503",
			"HTTP 503 Service Unavailable: store failed: disk full second line"}},
		{"empty 500", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
		}, 1, []string{"result: fail", "status: 500", "empty body"}},
		{"redirect is not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}, 1, []string{"result: fail", "status: 302"}},
		{"204 is not 200", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		}, 1, []string{"result: fail", "status: 204"}},
		{"long reason is cut", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, strings.Repeat("x", 10000))
		}, 1, []string{"result: fail", strings.Repeat("x", maxReason) + " ..."}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := httpServer(t, tc.handler) + "/readyz"
			var out, errOut bytes.Buffer
			status := run([]string{"--http", url, "--timeout", "2s"}, &out, &errOut)
			if status != tc.status {
				t.Fatalf("status %d, want %d; output %q %q", status, tc.status, out.String(), errOut.String())
			}
			for _, want := range tc.want {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output %q lacks %q", out.String(), want)
				}
			}
			if strings.Count(out.String(), "\n") != 1 {
				t.Errorf("output %q: want exactly one line", out.String())
			}
			if strings.Contains(out.String(), strings.Repeat("x", maxReason+1)) {
				t.Error("the reason was not shortened")
			}
		})
	}
}

func TestProbeHTTPBody(t *testing.T) {
	const page = "# HELP lottery_bets_stored_total Bets written.\nlottery_bets_stored_total 42\n"
	url := httpServer(t, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, page) })
	var out, errOut bytes.Buffer
	if status := run([]string{"--http", url + "/metrics", "--body"}, &out, &errOut); status != 0 {
		t.Fatalf("status %d; stderr %q", status, errOut.String())
	}
	if out.String() != page {
		t.Errorf("stdout %q, want the body %q alone", out.String(), page)
	}
	if !strings.Contains(errOut.String(), "action: http_check | result: success") {
		t.Errorf("stderr %q lacks the result line", errOut.String())
	}

	// A failed check writes no body to stdout.
	url = httpServer(t, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "draining after a signal", http.StatusServiceUnavailable)
	})
	out.Reset()
	errOut.Reset()
	if status := run([]string{"--http", url, "--body"}, &out, &errOut); status != 1 {
		t.Fatalf("status %d, want 1", status)
	}
	if out.Len() != 0 || !strings.Contains(errOut.String(), "draining after a signal") {
		t.Errorf("stdout %q stderr %q: want nothing, then the reason", out.String(), errOut.String())
	}
}

func TestProbeHTTPTimeoutAndDown(t *testing.T) {
	release := make(chan struct{})
	url := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	var out, errOut bytes.Buffer
	start := time.Now()
	if status := run([]string{"--http", url, "--timeout", "300ms"}, &out, &errOut); status != 1 {
		t.Fatalf("stuck server: status %d, want 1", status)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("stuck server: took %v with --timeout 300ms", took)
	}
	if !strings.Contains(out.String(), "result: fail") || strings.Contains(out.String(), "status:") {
		t.Errorf("stuck server: output %q, want a fail line with no status", out.String())
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	out.Reset()
	if status := run([]string{"--http", "http://" + addr + "/readyz"}, &out, &errOut); status != 1 {
		t.Fatalf("nothing listening: status %d, want 1", status)
	}
	if !strings.Contains(out.String(), "result: fail") || !strings.Contains(out.String(), "refused") {
		t.Errorf("nothing listening: output %q", out.String())
	}
}

func TestProbeBadFlags(t *testing.T) {
	cases := map[string][]string{
		"http and server":   {"--http", "http://127.0.0.1:9090/readyz", "--server", "server:12345"},
		"body without http": {"--body"},
		"no scheme":         {"--http", "127.0.0.1:9090/readyz"},
		"other scheme":      {"--http", "ftp://127.0.0.1/readyz"},
		"no host":           {"--http", "http:///readyz"},
		"zero timeout":      {"--timeout", "0s"},
		"positional":        {"server:12345"},
		"unknown flag":      {"--nope"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if status := run(args, &out, &errOut); status != exitUsage {
				t.Errorf("status %d, want %d", status, exitUsage)
			}
			if out.Len() != 0 || errOut.Len() == 0 {
				t.Errorf("stdout %q stderr %q: want nothing, then the reason", out.String(), errOut.String())
			}
		})
	}
}
