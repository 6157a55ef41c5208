package bench

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// describeMachine fills what can be learned about this machine; fields it
// cannot read stay empty.
func describeMachine(dataDir string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), DataDir: dataDir, DataDirFS: fsType(dataDir)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range bytes.Lines(b) {
			if k, v, ok := strings.Cut(string(line), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range bytes.Lines(b) {
			if rest, ok := bytes.CutPrefix(line, []byte("MemTotal:")); ok {
				if f := strings.Fields(string(rest)); len(f) == 2 {
					if kb, err := strconv.ParseUint(f[0], 10, 64); err == nil {
						m.MemTotalBytes = kb * 1024
					}
				}
				break
			}
		}
	}
	m.LoadAvgStart = loadAvg()
	return m
}

// loadAvg is the one-minute load average, or -1 when unknown.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// Magic numbers of statfs(2) for the file systems worth naming.
const (
	tmpfsMagic   = 0x01021994
	ext4Magic    = 0xEF53
	xfsMagic     = 0x58465342
	btrfsMagic   = 0x9123683E
	overlayMagic = 0x794C7630
	nfsMagic     = 0x6969
	zfsMagic     = 0x2FC12FC1
)

// fsType names the file system holding dir.
func fsType(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	switch uint64(st.Type) {
	case tmpfsMagic:
		return "tmpfs"
	case ext4Magic:
		return "ext2/3/4"
	case xfsMagic:
		return "xfs"
	case btrfsMagic:
		return "btrfs"
	case overlayMagic:
		return "overlayfs"
	case nfsMagic:
		return "nfs"
	case zfsMagic:
		return "zfs"
	}
	return fmt.Sprintf("0x%X", uint64(st.Type))
}
