package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// it is 100 on every Linux architecture Go supports.
const clockTicks = 100

// FDMargin is the open files a process needs beyond one per connection:
// the store's files, the listener, stdio, the runtime's own descriptors.
const FDMargin = 64

// ErrCapacity is the cause of every error saying a run needs more
// connections than this machine allows.
var ErrCapacity = errors.New("beyond what this machine allows")

// memory is a process's resident set as /proc/<pid>/status reports it.
type memory struct {
	RSS  uint64 // VmRSS, bytes
	Peak uint64 // VmHWM, bytes
}

// waitingSettle is how long agencies have been waiting for the draw when
// the server's memory per waiting connection is read.
const waitingSettle = 2 * time.Second

// readMemory samples a process's resident set.
func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	return parseStatus(b)
}

// parseStatus takes VmRSS and VmHWM out of a /proc/<pid>/status file.
func parseStatus(b []byte) (memory, error) {
	var m memory
	var seen int
	for line := range bytes.Lines(b) {
		key, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *uint64
		switch string(key) {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.Peak
		default:
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return memory{}, fmt.Errorf("parse /proc status: %s is %q, want a number of kB", key, bytes.TrimSpace(rest))
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("parse /proc status: %s: %w", key, err)
		}
		*dst = kb * 1024
		seen++
	}
	if seen != 2 {
		return memory{}, errors.New("parse /proc status: VmRSS or VmHWM missing")
	}
	return m, nil
}

// readCPU returns the user plus system CPU time a process has used.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time of process %d: %w", pid, err)
	}
	return parseStat(b)
}

// parseStat takes utime+stime out of a /proc/<pid>/stat line. The command
// name may hold spaces and parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (time.Duration, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, errors.New("parse /proc stat: no command name")
	}
	f := strings.Fields(string(b[end+1:]))
	// After the name come field 3 (state) onwards; utime and stime are fields 14 and 15.
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("parse /proc stat: %d fields after the name, want more than %d", len(f), stime)
	}
	var ticks uint64
	for _, i := range []int{utime, stime} {
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc stat: field %d: %w", i+3, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// readOpenFilesLimit returns a running process's soft RLIMIT_NOFILE.
func readOpenFilesLimit(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, fmt.Errorf("read limits of process %d: %w", pid, err)
	}
	return parseLimits(b)
}

// parseLimits takes the soft "Max open files" out of a /proc/<pid>/limits file.
func parseLimits(b []byte) (uint64, error) {
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte("Max open files"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) < 2 {
			break
		}
		if f[0] == "unlimited" {
			return ^uint64(0), nil
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc limits: max open files: %w", err)
		}
		return n, nil
	}
	return 0, errors.New("parse /proc limits: no Max open files line")
}

// FileLimit is RLIMIT_NOFILE before and after RaiseFileLimit.
type FileLimit struct {
	SoftBefore uint64 `json:"soft_before"` // what the process started with (Go already raises it at start)
	Soft       uint64 `json:"soft"`
	Hard       uint64 `json:"hard"`
}

// RaiseFileLimit sets this process's soft RLIMIT_NOFILE to its hard limit,
// which servers started afterwards inherit.
func RaiseFileLimit() (FileLimit, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return FileLimit{}, fmt.Errorf("get open files limit: %w", err)
	}
	fl := FileLimit{SoftBefore: lim.Cur, Soft: lim.Cur, Hard: lim.Max}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fl, fmt.Errorf("raise open files limit to %d: %w", lim.Max, err)
		}
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fl, fmt.Errorf("get open files limit: %w", err)
	}
	fl.Soft, fl.Hard = lim.Cur, lim.Max
	return fl, nil
}

// PortRange is the kernel's ephemeral port range for outgoing connections.
type PortRange struct{ Low, High int }

// Size is how many ports the range holds.
func (p PortRange) Size() int { return p.High - p.Low + 1 }

// ReadPortRange reads /proc/sys/net/ipv4/ip_local_port_range.
func ReadPortRange() (PortRange, error) {
	f, err := os.Open("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return PortRange{}, fmt.Errorf("read ephemeral port range: %w", err)
	}
	defer f.Close()
	return parsePortRange(f)
}

func parsePortRange(r io.Reader) (PortRange, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return PortRange{}, fmt.Errorf("parse port range: %w", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return PortRange{}, fmt.Errorf("parse port range: %q is not two numbers", strings.TrimSpace(line))
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return PortRange{}, fmt.Errorf("parse port range: %q is not a range of ports", strings.TrimSpace(line))
	}
	return PortRange{lo, hi}, nil
}

// portHeadroom is how many ephemeral ports per source address are left for
// everything else running on the machine.
const portHeadroom = 256

// perSourceConns is how many connections to one server port a single
// source address can carry.
func perSourceConns(ports PortRange) int { return max(ports.Size()-portHeadroom, 1) }

// maxSources is how many loopback source addresses (127.0.0.1 to
// 127.0.0.254) the bench spreads its clients over at most.
const maxSources = 254

// CheckCapacity says whether k connections fit in this process's open files
// limit (the server process needs as many, and inherits the same limit) and
// in the ephemeral ports of the loopback source addresses.
func CheckCapacity(k int, lim FileLimit, ports PortRange) error {
	if need := uint64(k) + FDMargin; need > lim.Soft {
		return fmt.Errorf("%w: %d agencies need about %d open files in the bench and as many in the server "+
			"(one per connection plus %d), but RLIMIT_NOFILE is %d (hard %d); raise it (ulimit -n, limits.conf) or use fewer agencies",
			ErrCapacity, k, need, FDMargin, lim.Soft, lim.Hard)
	}
	if most := perSourceConns(ports) * maxSources; k > most {
		return fmt.Errorf("%w: %d agencies need more than %d ephemeral ports (%d-%d) on each of %d loopback addresses",
			ErrCapacity, k, ports.Size(), ports.Low, ports.High, maxSources)
	}
	return nil
}

// SourceAddrs returns the loopback addresses to spread k client connections
// over, or nil when one address (the kernel's choice) is enough.
func SourceAddrs(k int, ports PortRange) []net.IP {
	per := perSourceConns(ports)
	n := (k + per - 1) / per
	if n <= 1 {
		return nil
	}
	n = min(n, maxSources)
	ips := make([]net.IP, n)
	for i := range ips {
		ips[i] = net.IPv4(127, 0, 0, byte(i+1))
	}
	return ips
}
