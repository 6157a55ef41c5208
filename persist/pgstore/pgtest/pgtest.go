// Package pgtest runs throwaway PostgreSQL clusters for tests and
// benchmarks: initdb into a temporary directory, pg_ctl start on 127.0.0.1
// and a free port (its unix socket in the same directory), pg_ctl stop and
// removal at the end. As root, every PostgreSQL program runs as the
// unprivileged postgres user (runuser), which owns the directory.
//
// A test package starts one cluster for its binary in TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// and each test takes a fresh database from it with pgtest.NewDatabase(t).
// When the cluster cannot start, the tests that need it fail when CI=true
// (a CI run must never pass by skipping them) and skip, saying why,
// elsewhere.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options configure Start.
type Options struct {
	// Durable keeps fsync and full_page_writes on, for measurements; tests
	// run without them (a killed PostgreSQL loses nothing either way, only a
	// machine crash would). synchronous_commit stays on in both: without it
	// PostgreSQL acknowledges commits that a pg_ctl stop -m immediate loses.
	Durable bool
	// Settings are extra postgres -c settings, name=value.
	Settings []string
}

// Cluster is a running throwaway PostgreSQL cluster.
type Cluster struct {
	root, data, sock, logPath string
	bin                       string // directory of initdb, pg_ctl, postgres
	owner                     string // run PostgreSQL programs as this user ("" for ourselves)
	port                      int
	opts                      Options
	dbs                       atomic.Int64
}

// Start creates and starts a cluster.
func Start(opts Options) (*Cluster, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "loteria-pg-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c := &Cluster{root: root, data: filepath.Join(root, "data"), sock: filepath.Join(root, "sock"),
		logPath: filepath.Join(root, "postgres.log"), bin: bin, opts: opts}
	if err := c.setUp(); err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	var startErr error
	for range 3 { // a port found free may be taken before postgres binds it
		if c.port, startErr = freePort(); startErr != nil {
			break
		}
		if startErr = c.Restart(); startErr == nil {
			return c, nil
		}
	}
	os.RemoveAll(root)
	return nil, startErr
}

// findBin finds PostgreSQL's programs: on PATH, or where Debian's packages
// put them (/usr/lib/postgresql/<version>/bin, the newest version).
func findBin() (string, error) {
	if dir := os.Getenv("PG_BIN"); dir != "" {
		return dir, nil
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("pgtest: PostgreSQL not found: no initdb and pg_ctl on PATH nor under /usr/lib/postgresql/*/bin " +
		"(apt-get install postgresql, or set PG_BIN)")
}

// setUp makes the directories, hands them to the postgres user when we are
// root, and runs initdb.
func (c *Cluster) setUp() error {
	if err := os.MkdirAll(c.sock, 0o700); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("pgtest: running as root, PostgreSQL must run as the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{c.root, c.sock} {
			if err := os.Chown(p, uid, gid); err != nil {
				return fmt.Errorf("pgtest: %w", err)
			}
		}
		c.owner = "postgres"
	}
	if template := c.template(); template != "" {
		if out, err := exec.Command("cp", "-a", template, c.data).CombinedOutput(); err == nil {
			return nil
		} else {
			os.RemoveAll(c.data)
			fmt.Fprintf(os.Stderr, "pgtest: copying the initdb template failed, running initdb: %v\n%s", err, out)
		}
	}
	out, err := c.run("initdb", "-D", c.data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	if err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	c.keepTemplate()
	return nil
}

// initdb takes seconds; its fresh result is kept in the temporary
// directory and copied for the next clusters, keyed by the PostgreSQL
// version and who owns the files.
func (c *Cluster) templatePath() string {
	out, err := exec.Command(filepath.Join(c.bin, "initdb"), "--version").Output()
	if err != nil {
		return ""
	}
	key := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' {
			return r
		}
		return '-'
	}, strings.TrimSpace(string(out)))
	return filepath.Join(os.TempDir(), fmt.Sprintf("loteria-pgtest-template-%s-uid%d", key, os.Geteuid()))
}

// template is the kept initdb result, or "" when there is none yet.
func (c *Cluster) template() string {
	dir := c.templatePath()
	if dir == "" {
		return ""
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		return ""
	}
	return filepath.Join(dir, "data")
}

// keepTemplate copies the fresh data directory to the template's place,
// atomically (another test binary may be doing the same).
func (c *Cluster) keepTemplate() {
	dir := c.templatePath()
	if dir == "" {
		return
	}
	tmp, err := os.MkdirTemp(os.TempDir(), ".loteria-pgtest-template-")
	if err != nil {
		return
	}
	if err := exec.Command("cp", "-a", c.data, filepath.Join(tmp, "data")).Run(); err != nil || os.Rename(tmp, dir) != nil {
		os.RemoveAll(tmp) // someone else kept one first, or the copy failed: no template this time
	}
}

// run runs a PostgreSQL program as the cluster's owner.
func (c *Cluster) run(prog string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, prog)
	var cmd *exec.Cmd
	if c.owner != "" {
		cmd = exec.Command("runuser", append([]string{"-u", c.owner, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.root
	return cmd.CombinedOutput()
}

// Restart starts the cluster (again, after Stop) on the same port.
func (c *Cluster) Restart() error {
	settings := []string{
		"listen_addresses=127.0.0.1",
		"port=" + strconv.Itoa(c.port),
		"unix_socket_directories=" + c.sock,
		"max_connections=200",
		"shared_buffers=64MB",
	}
	if !c.opts.Durable {
		settings = append(settings, "fsync=off", "full_page_writes=off")
	}
	settings = append(settings, c.opts.Settings...)
	var o strings.Builder
	for _, s := range settings {
		fmt.Fprintf(&o, " -c %s", s)
	}
	out, err := c.run("pg_ctl", "-D", c.data, "-l", c.logPath, "-w", "-t", "60", "-o", o.String(), "start")
	if err != nil {
		return fmt.Errorf("pgtest: pg_ctl start on port %d: %w\n%s\n%s", c.port, err, out, c.LogTail(20))
	}
	return nil
}

// Stop stops the cluster: mode "fast" (clean) or "immediate" (as a crash:
// no checkpoint, recovery at the next start).
func (c *Cluster) Stop(mode string) error {
	out, err := c.run("pg_ctl", "-D", c.data, "-m", mode, "-w", "-t", "60", "stop")
	if err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop -m %s: %w\n%s", mode, err, out)
	}
	return nil
}

// Remove stops the cluster if it runs and deletes its directory.
func (c *Cluster) Remove() error {
	var err error
	if _, statErr := os.Stat(filepath.Join(c.data, "postmaster.pid")); statErr == nil {
		err = c.Stop("fast")
	}
	return errors.Join(err, os.RemoveAll(c.root))
}

// Port is the TCP port the cluster listens on, on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// URL is the URL of database db on the cluster.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// CreateDatabase creates an empty database and returns its URL.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgtest: connect: %w", err)
	}
	defer conn.Close(ctx)
	// FILE_COPY is quicker than WAL_LOG for tiny databases; PostgreSQL
	// before 15 knows neither and copies files anyway.
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" STRATEGY = FILE_COPY"); err != nil {
		if _, err2 := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err2 != nil {
			return "", fmt.Errorf("pgtest: create database %s: %w", name, errors.Join(err, err2))
		}
	}
	return c.URL(name), nil
}

// NewDatabase creates a database of its own for t.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url, err := c.CreateDatabase(ctx, fmt.Sprintf("t%d_%d", os.Getpid(), c.dbs.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// LogTail is the end of the cluster's server log.
func (c *Cluster) LogTail(lines int) string {
	data, _ := os.ReadFile(c.logPath)
	all := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return string(bytes.Join(all, []byte("\n")))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// The cluster of this test binary, started by Main.
var shared struct {
	mu      sync.Mutex
	cluster *Cluster
	err     error
}

// CI reports whether the tests run in CI (CI=true), where a PostgreSQL that
// cannot start fails the run.
func CI() bool { return os.Getenv("CI") == "true" }

// Main starts the test binary's cluster, runs the tests and removes the
// cluster; use it as os.Exit(pgtest.Main(m)). With CI=true a cluster that
// cannot start fails the run before any test.
func Main(m *testing.M) int {
	c, err := Start(Options{})
	shared.mu.Lock()
	shared.cluster, shared.err = c, err
	shared.mu.Unlock()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: PostgreSQL did not start: %v\n", err)
		if CI() {
			fmt.Fprintln(os.Stderr, "FAIL: CI=true and the tests need PostgreSQL")
			return 1
		}
	}
	code := m.Run()
	if c != nil {
		if err := c.Remove(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Shared is the cluster Main started. When it could not start, t fails
// with CI=true and is skipped otherwise, saying why either way.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	shared.mu.Lock()
	c, err := shared.cluster, shared.err
	shared.mu.Unlock()
	switch {
	case c != nil:
		return c
	case err == nil:
		t.Fatal("pgtest: no cluster: call pgtest.Main from TestMain")
	case CI():
		t.Fatalf("PostgreSQL is needed and did not start (CI=true): %v", err)
	default:
		t.Skipf("PostgreSQL did not start, so this test cannot run (with CI=true it fails instead): %v", err)
	}
	return nil
}

// NewDatabase is Shared(t).NewDatabase(t).
func NewDatabase(t testing.TB) string {
	t.Helper()
	return Shared(t).NewDatabase(t)
}
