package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestReadProcUsage(t *testing.T) {
	// Burn a little CPU and switch a few times so both counters move.
	for range 5 {
		deadline := time.Now().Add(2 * time.Millisecond)
		for time.Now().Before(deadline) {
		}
		time.Sleep(time.Millisecond)
	}
	u, err := readProcUsage(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if u.cpu < 5*time.Millisecond || u.csw == 0 {
		t.Errorf("usage %+v: want at least the 10 ms of CPU burnt and some context switches", u)
	}
	if _, err := readProcUsage(-1); err == nil {
		t.Error("usage of pid -1: no error")
	}
}

func TestSetupUsage(t *testing.T) {
	var none *setupUsage
	none.phase("sequential", 10) // nil-safe: Linux's side
	if none.String() != "" {
		t.Errorf("nil usage: %q", none.String())
	}
	if daemonUsage(false) != nil {
		t.Error("usage measured for Linux's helper")
	}
	if b := benchUsage(); b == nil || b.pid != os.Getpid() || b.who != "bench" {
		t.Errorf("benchUsage() = %+v", b)
	}
	u := &setupUsage{pid: os.Getpid(), who: "daemon"}
	u.phase("sequential", 0) // no set-up: no figure
	for i := 0; i < 1e6; i++ {
		_ = strings.Repeat("x", i%3)
	}
	u.phase("parallel", 4)
	s := u.String()
	if !strings.HasPrefix(s, "; daemon per set-up: parallel ") || !strings.Contains(s, " µs CPU, ") || !strings.HasSuffix(s, " context switches") {
		t.Errorf("String() = %q", s)
	}
}

func TestSetupQuantiles(t *testing.T) {
	if got := setupQuantiles(nil); got != "no set-up completed" {
		t.Errorf("empty: %q", got)
	}
	var d []time.Duration
	for i := 1; i <= 10; i++ {
		d = append(d, time.Duration(11-i)*100*time.Microsecond)
	}
	if got, want := setupQuantiles(d), "median 600 µs, p90 1000 µs"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if d[0] != time.Millisecond {
		t.Error("setupQuantiles sorted its argument in place")
	}
}
