package load

import (
	"os"
	"strings"
	"testing"
	"time"
)

// The part of a /proc/<pid>/stat line after the command name, shaped like
// an nginx worker's, with utime (field 14) 123 and stime (field 15) 45.
const statTail = " S 4100 4100 4100 0 -1 4194624 1000 0 0 0 123 45 0 0 20 0 1 0 " +
	"555 12345678 900 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    StatSample
		wantErr string
	}{
		{"plain", "4101 (nginx)" + statTail, StatSample{PPID: 4100, UTime: 123, STime: 45}, ""},
		{"comm with spaces", "4101 (nginx: worker process)" + statTail,
			StatSample{PPID: 4100, UTime: 123, STime: 45}, ""},
		{"comm with parentheses and digits", "4101 (a) 1 2 (b))" + statTail,
			StatSample{PPID: 4100, UTime: 123, STime: 45}, ""},
		{"trailing newline", "4101 (cerbai)" + statTail + "\n",
			StatSample{PPID: 4100, UTime: 123, STime: 45}, ""},
		{"no comm", "4101 nginx S 1", StatSample{}, "no ')'"},
		{"truncated", "4101 (nginx) S 4100 4100", StatSample{}, "3 fields"},
		{"bad utime", "4101 (x)" + strings.Replace(statTail, " 123 ", " x ", 1),
			StatSample{}, "utime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tt.line))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseStat error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseStat: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParseStat = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestStatSample_CPUCountsTicksAt100PerSecond(t *testing.T) {
	s := StatSample{UTime: 123, STime: 45}
	if got, want := s.CPU(), 1680*time.Millisecond; got != want {
		t.Errorf("CPU() = %v, want %v", got, want)
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tcerbai\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1 kB\n"
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr bool
	}{
		{"typical", status, 12345 * 1024, false},
		{"last line without newline", "Name:\tx\nVmRSS:\t 8 kB", 8 * 1024, false},
		{"missing", "Name:\tkthreadd\nState:\tS\n", 0, true},
		{"unexpected unit", "VmRSS:\t 8 MB\n", 0, true},
		{"not a number", "VmRSS:\t lots kB\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseVmRSS([]byte(tt.status))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseVmRSS error = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseVmRSS = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestProc_ReadsOwnProcess(t *testing.T) {
	p := &Proc{PID: os.Getpid(), WithChildren: true}
	rss, err := p.RSS()
	if err != nil {
		t.Fatalf("RSS: %v", err)
	}
	if rss <= 0 {
		t.Errorf("RSS = %d, want > 0", rss)
	}
	if _, err := p.CPUTime(); err != nil {
		t.Errorf("CPUTime: %v", err)
	}
}

func TestProc_GoneProcessIsAnError(t *testing.T) {
	p := &Proc{PID: 1 << 30} // above pid_max, never a process
	if _, err := p.RSS(); err == nil {
		t.Error("RSS of a missing process: got nil error, want one")
	}
	if _, err := p.CPUTime(); err == nil {
		t.Error("CPUTime of a missing process: got nil error, want one")
	}
}
