package e2e_test

import (
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tp0/loteria/internal/proctest"
)

// bins are the real binaries the tests run, built once per test binary.
var bins = proctest.NewBinaries(
	"github.com/tp0/loteria/eventserver/cmd/eventserver",
	"github.com/tp0/loteria/agency/cmd/agency",
	"github.com/tp0/loteria/agency/cmd/gendata",
	"github.com/tp0/loteria/secure/cmd/keygen",
	"github.com/tp0/loteria/persist/pgstore/cmd/export")

func binaries(t *testing.T) string { return bins.Dir(t) }

// freeAddr is a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// run runs a tool to completion, failing the test unless it exits 0.
func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

func itoa(n int) string { return strconv.Itoa(n) }
