package bench

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStatus(t *testing.T) {
	status := "Name:\tbench\nVmPeak:\t  900 kB\nVmHWM:\t    5120 kB\nVmRSS:\t    4096 kB\nThreads:\t7\n"
	m, err := parseStatus([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 4096*1024 || m.Peak != 5120*1024 {
		t.Errorf("parseStatus = %+v, want RSS 4 MiB, peak 5 MiB", m)
	}
	for _, bad := range []string{
		"VmRSS:\t 4096 kB\n",                   // no VmHWM
		"VmRSS:\t many kB\nVmHWM:\t 1 kB\n",    // not a number
		"VmRSS:\t 4096 MB\nVmHWM:\t 4096 kB\n", // wrong unit
	} {
		if _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseStatCountsFromTheLastParen(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	stat := "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 123 456 789\n"
	got, err := parseStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want { // (250+75) ticks of 10ms
		t.Errorf("parseStat = %v, want %v", got, want)
	}
	if _, err := parseStat([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("parseStat of a short line succeeded, want an error")
	}
	if _, err := parseStat([]byte("no name here")); err == nil {
		t.Error("parseStat without a command name succeeded, want an error")
	}
}

func TestParseLimits(t *testing.T) {
	limits := "Limit                     Soft Limit           Hard Limit           Units     \n" +
		"Max processes             95000                95000                processes \n" +
		"Max open files            20000                40000                files     \n"
	n, err := parseLimits([]byte(limits))
	if err != nil || n != 20000 {
		t.Errorf("parseLimits = %d, %v; want 20000", n, err)
	}
	n, err = parseLimits([]byte("Max open files            unlimited            unlimited            files\n"))
	if err != nil || n != ^uint64(0) {
		t.Errorf("parseLimits(unlimited) = %d, %v; want the largest value", n, err)
	}
	if _, err := parseLimits([]byte("Max processes 1 1 processes\n")); err == nil {
		t.Error("parseLimits without Max open files succeeded, want an error")
	}
}

func TestOwnProcessSamples(t *testing.T) {
	pid := os.Getpid()
	m, err := readMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS == 0 || m.Peak < m.RSS {
		t.Errorf("own memory %+v: want RSS > 0 and peak >= RSS", m)
	}
	if _, err := readCPU(pid); err != nil {
		t.Fatal(err)
	}
	n, err := readOpenFilesLimit(pid)
	if err != nil || n == 0 {
		t.Errorf("own open files limit = %d, %v", n, err)
	}
	if _, err := readMemory(-1); err == nil {
		t.Error("readMemory of no process succeeded, want an error")
	}
}

func TestRaiseFileLimitReachesHard(t *testing.T) {
	lim, err := RaiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	if lim.Soft != lim.Hard || lim.SoftBefore > lim.Soft {
		t.Errorf("after raising: %+v, want soft == hard and soft_before <= soft", lim)
	}
	n, err := readOpenFilesLimit(os.Getpid())
	if err != nil || n != lim.Soft {
		t.Errorf("/proc says the soft limit is %d (%v), RaiseFileLimit says %d", n, err, lim.Soft)
	}
}

func TestParsePortRange(t *testing.T) {
	p, err := parsePortRange(strings.NewReader("32768\t60999\n"))
	if err != nil || p != (PortRange{32768, 60999}) || p.Size() != 28232 {
		t.Errorf("parsePortRange = %+v (size %d), %v", p, p.Size(), err)
	}
	for _, bad := range []string{"", "32768", "60999 32768", "0 100", "1024 70000", "a b"} {
		if _, err := parsePortRange(strings.NewReader(bad)); err == nil {
			t.Errorf("parsePortRange(%q) succeeded, want an error", bad)
		}
	}
	if _, err := ReadPortRange(); err != nil {
		t.Errorf("this machine's port range: %v", err)
	}
}

func TestCheckCapacity(t *testing.T) {
	ports := PortRange{32768, 60999}
	lim := FileLimit{Soft: 20000, Hard: 20000}
	if err := CheckCapacity(10000, lim, ports); err != nil {
		t.Errorf("10,000 agencies with 20,000 files: %v", err)
	}
	err := CheckCapacity(20000, lim, ports)
	if !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), "RLIMIT_NOFILE is 20000") {
		t.Errorf("20,000 agencies with 20,000 files: %v, want ErrCapacity naming the limit", err)
	}
	big := FileLimit{Soft: 1 << 30, Hard: 1 << 30}
	if err := CheckCapacity(100000, big, ports); err != nil {
		t.Errorf("100,000 agencies over several source addresses: %v", err)
	}
	err = CheckCapacity(100000, big, PortRange{60000, 60099})
	if !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), "ephemeral ports") {
		t.Errorf("100,000 agencies over 100 ports per address: %v, want ErrCapacity about ports", err)
	}
}

func TestSourceAddrsSpreadOnlyWhenNeeded(t *testing.T) {
	ports := PortRange{32768, 60999} // 28,232 ports, 27,976 usable per address
	if got := SourceAddrs(27976, ports); got != nil {
		t.Errorf("27,976 agencies: %v, want nil (one address)", got)
	}
	got := SourceAddrs(27977, ports)
	if len(got) != 2 || !got[0].Equal(net.IPv4(127, 0, 0, 1)) || !got[1].Equal(net.IPv4(127, 0, 0, 2)) {
		t.Errorf("27,977 agencies: %v, want 127.0.0.1 and 127.0.0.2", got)
	}
	if got := SourceAddrs(60000, ports); len(got) != 3 {
		t.Errorf("60,000 agencies: %d addresses, want 3", len(got))
	}
	if got := SourceAddrs(1<<30, PortRange{60000, 60099}); len(got) != maxSources || !got[maxSources-1].Equal(net.IPv4(127, 0, 0, 254)) {
		t.Errorf("huge K: %d addresses ending %v, want %d ending 127.0.0.254", len(got), got[len(got)-1], maxSources)
	}
}
