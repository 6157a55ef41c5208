// Command probe checks that an event server answers. It has two modes:
//
//	probe [--server HOST:PORT]    PING mode (the default)
//	probe --http URL [--body]     HTTP mode
//
// PING mode sends a plaintext PING with a random payload and expects a PONG
// echoing it. It needs no agency key: a secured server answers a plaintext
// PING before any handshake, and PING is all such a peer can do. It is the
// engine of validar-echo-server.sh and prints the course's line
// "action: test_echo_server | result: success" (or fail).
//
// HTTP mode GETs URL once, without following redirects, and succeeds only on
// status 200; any other status fails with the response's first bytes as the
// reason. It is the Compose health check, against the server's /readyz (the
// image is FROM scratch: there is no curl in it). It prints
// "action: http_check | result: success" (or fail). With --body the
// response body is written to stdout and that line goes to stderr, so
// `probe --http http://server:9090/metrics --body` scrapes the metrics.
//
// Exit status: 0 success, 1 failure, 2 bad flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/tp0/loteria/eventserver/probe"
	"github.com/tp0/loteria/internal/logging"
)

const (
	exitFail  = 1
	exitUsage = 2

	// maxBody is the most of a response body read in HTTP mode: far more than
	// the server's /metrics page, and a bound against anything else.
	maxBody = 8 << 20
	// maxReason is how much of a failed response's body goes into the error.
	maxReason = 512
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("probe", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "server:12345", "PING mode: event server address, host:port")
	target := fs.String("http", "", "HTTP mode: GET this URL (e.g. http://127.0.0.1:9090/readyz); 200 is success")
	body := fs.Bool("body", false, "HTTP mode: write the response body to stdout (the result line goes to stderr)")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	quiet := fs.Bool("quiet", false, "print nothing; only the exit status tells")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "probe: %v\n", err)
		return exitUsage
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "probe: "+format+"\n", a...)
		return exitUsage
	}
	switch {
	case fs.NArg() > 0:
		return usage("unexpected argument %q (all settings are flags)", fs.Arg(0))
	case *timeout <= 0:
		return usage("--timeout must be positive, got %v", *timeout)
	case *target != "" && fs.Changed("server"):
		return usage("--http and --server exclude each other: give one")
	case *body && *target == "":
		return usage("--body needs --http")
	}
	if *target == "" {
		return ping(*server, *timeout, logger(stdout, *quiet))
	}
	u, err := checkURL(*target)
	if err != nil {
		return usage("--http: %v", err)
	}
	if *body {
		return get(u, *timeout, stdout, logger(stderr, *quiet))
	}
	return get(u, *timeout, nil, logger(stdout, *quiet))
}

// logger writes the result line to w, or nowhere when quiet.
func logger(w io.Writer, quiet bool) *zap.Logger {
	if quiet {
		return zap.NewNop()
	}
	log, err := logging.New("info", logging.FormatConsole, w)
	if err != nil { // only for a bad level or format, both fixed here
		panic(err)
	}
	return log
}

func ping(server string, timeout time.Duration, log *zap.Logger) int {
	if err := probe.Ping(server, timeout); err != nil {
		log.Error("test_echo_server", logging.Fail, zap.String("server", server), zap.Error(err))
		return exitFail
	}
	log.Info("test_echo_server", logging.Success, zap.String("server", server))
	return 0
}

// checkURL accepts an absolute http or https URL with a host.
func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, err
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%q: want an http:// or https:// URL", raw)
	case u.Host == "":
		return nil, fmt.Errorf("%q has no host", raw)
	}
	return u, nil
}

// get performs HTTP mode: one GET of u, copying a 200's body to out when out
// is not nil.
func get(u *url.URL, timeout time.Duration, out io.Writer, log *zap.Logger) int {
	target := zap.String("url", u.Redacted())
	status, err := fetch(u, timeout, out)
	if err != nil {
		fields := []zap.Field{logging.Fail, target}
		if status != 0 {
			fields = append(fields, zap.Int("status", status))
		}
		log.Error("http_check", append(fields, zap.Error(err))...)
		return exitFail
	}
	log.Info("http_check", logging.Success, target, zap.Int("status", status))
	return 0
}

// fetch GETs u within timeout. It returns the status (0 when no response
// came) and, for anything but a complete 200, an error; a failed response's
// body, shortened to one line, is the error's reason.
func fetch(u *url.URL, timeout time.Duration, out io.Writer) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, err
	}
	client := &http.Client{
		// A health check asks one URL: a redirect is an answer, not 200.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		// No proxy from the environment: the check is of this URL, directly.
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		head, _ := io.ReadAll(io.LimitReader(resp.Body, maxReason+1))
		return resp.StatusCode, fmt.Errorf("HTTP %s: %s", resp.Status, reason(head))
	}
	if out == nil {
		out = io.Discard
	}
	n, err := io.Copy(out, io.LimitReader(resp.Body, maxBody+1))
	switch {
	case err != nil:
		return resp.StatusCode, fmt.Errorf("read body: %w", err)
	case n > maxBody:
		return resp.StatusCode, fmt.Errorf("body longer than %d bytes", maxBody)
	}
	return resp.StatusCode, nil
}

// reason turns the start of a response body into one short line.
func reason(b []byte) string {
	cut := len(b) > maxReason
	if cut {
		b = b[:maxReason]
	}
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "?")), " ")
	switch {
	case s == "":
		return "empty body"
	case cut:
		return s + " ..."
	}
	return s
}
