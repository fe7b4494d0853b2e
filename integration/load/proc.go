package load

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ClockTicksPerSecond is the unit of utime and stime in /proc/<pid>/stat.
// The kernel reports them in USER_HZ, which is 100 on every mainstream
// Linux architecture (getconf CLK_TCK); reading it properly would need
// cgo's sysconf, so the value is fixed here. One tick is 10 ms, which bounds
// the resolution of CPU figures over a phase of a few seconds.
const ClockTicksPerSecond = 100

// StatSample holds the fields of /proc/<pid>/stat that the load tool uses.
type StatSample struct {
	PPID  int    // field 4
	UTime uint64 // field 14, clock ticks in user mode
	STime uint64 // field 15, clock ticks in kernel mode
}

// CPU returns user plus system time.
func (s StatSample) CPU() time.Duration {
	return time.Duration(s.UTime+s.STime) * time.Second / ClockTicksPerSecond
}

// ParseStat parses one /proc/<pid>/stat line. The second field, the command
// name in parentheses, may itself contain spaces and parentheses, so the
// fields are counted from the last ')' in the line.
func ParseStat(line []byte) (StatSample, error) {
	end := bytes.LastIndexByte(line, ')')
	if end < 0 {
		return StatSample{}, errors.New("parse stat: no ')' after the command name")
	}
	// After ") " come fields 3 (state), 4 (ppid), ... 14 (utime), 15 (stime).
	f := bytes.Fields(line[end+1:])
	if len(f) < 13 {
		return StatSample{}, fmt.Errorf("parse stat: %d fields after the command name, want 13 or more",
			len(f))
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return StatSample{}, fmt.Errorf("parse stat ppid: %w", err)
	}
	utime, err := strconv.ParseUint(string(f[11]), 10, 64)
	if err != nil {
		return StatSample{}, fmt.Errorf("parse stat utime: %w", err)
	}
	stime, err := strconv.ParseUint(string(f[12]), 10, 64)
	if err != nil {
		return StatSample{}, fmt.Errorf("parse stat stime: %w", err)
	}
	return StatSample{PPID: ppid, UTime: utime, STime: stime}, nil
}

// ParseVmRSS returns the resident set size in bytes from the text of
// /proc/<pid>/status (the "VmRSS:  1234 kB" line).
func ParseVmRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("parse VmRSS: unexpected line %q", bytes.TrimSpace(line))
		}
		kib, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmRSS: %w", err)
		}
		return kib * 1024, nil
	}
	return 0, errors.New("parse VmRSS: no VmRSS line (kernel thread or exited process?)")
}

// Proc names a measured process: a proxy whose CPU time and memory the
// load tool samples from /proc.
type Proc struct {
	PID int
	// WithChildren adds the process's direct children, as for nginx, whose
	// master forks the workers that do the work.
	WithChildren bool
}

// CPUTime returns the user plus system time used so far.
func (p *Proc) CPUTime() (time.Duration, error) {
	var total time.Duration
	for _, pid := range p.pids() {
		s, err := readStat(pid)
		if err != nil {
			if pid == p.PID {
				return 0, err
			}
			continue // a child that exited meanwhile
		}
		total += s.CPU()
	}
	return total, nil
}

// RSS returns the resident set size in bytes.
func (p *Proc) RSS() (int64, error) {
	var total int64
	for _, pid := range p.pids() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err == nil {
			var rss int64
			rss, err = ParseVmRSS(b)
			total += rss
		}
		if err != nil && pid == p.PID {
			return 0, fmt.Errorf("read rss of %d: %w", pid, err)
		}
	}
	return total, nil
}

// pids returns p.PID and, with WithChildren, its children found by
// scanning /proc (errors on other processes are ignored: they come and go).
func (p *Proc) pids() []int {
	pids := []int{p.PID}
	if !p.WithChildren {
		return pids
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == p.PID {
			continue
		}
		if s, err := readStat(pid); err == nil && s.PPID == p.PID {
			pids = append(pids, pid)
		}
	}
	return pids
}

func readStat(pid int) (StatSample, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return StatSample{}, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	return ParseStat(b)
}
