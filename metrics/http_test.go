package metrics

import (
	"context"
	"errors"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/internal/logging"
)

func TestHealthEndpoints(t *testing.T) {
	down := errors.New("store closed")
	tests := []struct {
		name     string
		health   Health
		path     string
		wantCode int
		wantBody string
	}{
		{"live, nil func", Health{}, "/healthz", http.StatusOK, "ok\n"},
		{"ready, nil func", Health{}, "/readyz", http.StatusOK, "ok\n"},
		{"live ok", Health{Live: func() error { return nil }}, "/healthz", http.StatusOK, "ok\n"},
		{"live down", Health{Live: func() error { return down }}, "/healthz", http.StatusServiceUnavailable, "store closed\n"},
		{"ready ok", Health{Ready: func() error { return nil }}, "/readyz", http.StatusOK, "ok\n"},
		{"ready down", Health{Ready: func() error { return down }}, "/readyz", http.StatusServiceUnavailable, "store closed\n"},
		{"not ready but live", Health{Ready: func() error { return down }}, "/healthz", http.StatusOK, "ok\n"},
		{"not live but ready", Health{Live: func() error { return down }}, "/readyz", http.StatusOK, "ok\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Handler(New(1).Registry(), tt.health)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if rec.Code != tt.wantCode || rec.Body.String() != tt.wantBody {
				t.Errorf("GET %s = %d %q, want %d %q", tt.path, rec.Code, rec.Body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

func TestHandlerRoutes(t *testing.T) {
	h := Handler(New(1).Registry(), Health{})
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{http.MethodHead, "/healthz", http.StatusOK},
		{http.MethodPost, "/readyz", http.StatusMethodNotAllowed},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodGet, "/debug/pprof/", http.StatusNotFound},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if rec.Code != tt.want {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, rec.Code, tt.want)
		}
	}
}

func TestMetricsHasRuntimeAndProcessSeries(t *testing.T) {
	m := New(3)
	fam := scrape(t, Handler(m.Registry(), Health{}))
	for _, name := range []string{
		"go_goroutines", "go_memstats_heap_inuse_bytes", "go_gc_duration_seconds",
		"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
		"lottery_agencies", "lottery_commit_duration_seconds",
		"promhttp_metric_handler_errors_total",
	} {
		if _, ok := fam[name]; !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if got := fam["go_goroutines"].GetMetric()[0].GetGauge().GetValue(); got < 1 {
		t.Errorf("go_goroutines = %v", got)
	}
	if got := fam["process_resident_memory_bytes"].GetMetric()[0].GetGauge().GetValue(); got <= 0 {
		t.Errorf("process_resident_memory_bytes = %v", got)
	}
	// The scrape and the registry agree on every lottery series.
	scraped, gathered := flatten(fam, "lottery_"), flatten(gather(t, m), "lottery_")
	if len(scraped) != len(gathered) {
		t.Errorf("scrape has %d lottery series, registry %d", len(scraped), len(gathered))
	}
	for series, v := range gathered {
		if scraped[series] != v {
			t.Errorf("%s: scraped %v, gathered %v", series, scraped[series], v)
		}
	}
}

// get fetches url with a client of its own, closing its idle connections.
func get(t *testing.T, url string) (int, string, error) {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func TestServe(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := errors.New("draw not finished")
	addr, wait, err := Serve(ctx, "127.0.0.1:0", Handler(New(2).Registry(), Health{Ready: func() error { return ready }}), zap.New(core))
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	if _, port, _ := net.SplitHostPort(addr); port == "0" || port == "" {
		t.Fatalf("bound address %q has no real port", addr)
	}
	listen := logs.FilterMessage("metrics_listen").AllUntimed()
	if len(listen) != 1 {
		t.Fatalf("%d metrics_listen lines, want 1", len(listen))
	}
	fields := listen[0].ContextMap()
	if fields[logging.ResultKey] != "success" || fields["address"] != addr {
		t.Errorf("metrics_listen fields %v, want result success and address %s", fields, addr)
	}

	if code, body, err := get(t, "http://"+addr+"/healthz"); err != nil || code != http.StatusOK || body != "ok\n" {
		t.Errorf("GET /healthz = %d %q %v", code, body, err)
	}
	if code, body, err := get(t, "http://"+addr+"/readyz"); err != nil || code != http.StatusServiceUnavailable || body != "draw not finished\n" {
		t.Errorf("GET /readyz = %d %q %v", code, body, err)
	}
	if code, _, err := get(t, "http://"+addr+"/metrics"); err != nil || code != http.StatusOK {
		t.Errorf("GET /metrics = %d %v", code, err)
	}

	cancel()
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait after cancel: %v", err)
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("server did not stop after cancel")
	}
	if err := wait(); err != nil {
		t.Errorf("second wait: %v", err)
	}
	if n := logs.FilterMessage("metrics_shutdown").FilterField(logging.Success).Len(); n != 1 {
		t.Errorf("%d successful metrics_shutdown lines, want 1", n)
	}
	if _, _, err := get(t, "http://"+addr+"/healthz"); err == nil {
		t.Error("server still answers after shutdown")
	}
}

func TestServeListenError(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, addr := range []string{taken.Addr().String(), "127.0.0.1:http-nope"} {
		core, logs := observer.New(zapcore.DebugLevel)
		bound, wait, err := Serve(context.Background(), addr, http.NotFoundHandler(), zap.New(core))
		if err == nil {
			t.Errorf("Serve(%q) succeeded on %s", addr, bound)
			continue
		}
		if wait != nil || bound != "" {
			t.Errorf("Serve(%q) returned %q and a wait func with error %v", addr, bound, err)
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) {
			t.Errorf("Serve(%q) error %v does not wrap the listen error", addr, err)
		}
		if n := logs.FilterMessage("metrics_listen").FilterField(logging.Fail).Len(); n != 1 {
			t.Errorf("Serve(%q): %d failed metrics_listen lines, want 1", addr, n)
		}
	}
}

// TestHTTPErrorLogKeepsTheLineContract checks that net/http's own error
// lines become metrics_http fail lines with the error as a field, not
// lines whose action is free text.
func TestHTTPErrorLogKeepsTheLineContract(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	l := stdlog.New(httpErrorLog{zap.New(core)}, "", 0)
	l.Printf("http: Accept error: %v; retrying in %v", errors.New("too many open files"), 5*time.Millisecond)
	got := logs.AllUntimed()
	if len(got) != 1 || got[0].Message != "metrics_http" || got[0].Level != zapcore.WarnLevel {
		t.Fatalf("lines %+v, want one WARN metrics_http", got)
	}
	fields := got[0].ContextMap()
	if fields[logging.ResultKey] != "fail" || fields["error"] != "http: Accept error: too many open files; retrying in 5ms" {
		t.Errorf("fields %v, want result fail and the error without its newline", fields)
	}
}
