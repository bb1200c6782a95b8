package pptp

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Shaping (issue 9): session_rate and users in the server's config.
func TestRateLimitsConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.yaml")
	y := "pool: 10.8.0.10-10.8.0.20\nlimits:\n  session_rate: 10mbit\nusers:\n  alice: {rate: 50mbit}\n  bob: {rate: 512kbit}\n"
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	fc, err := LoadFileConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := fc.Config()
	if err != nil {
		t.Fatal(err)
	}
	for u, want := range map[string]uint64{"alice": 50e6, "bob": 512e3, "carol": 10e6} {
		if got := cfg.RateLimits.For(u); uint64(got) != want {
			t.Errorf("For(%s) = %v, want %d", u, got, want)
		}
	}
	for _, c := range []struct{ y, want string }{
		{"pool: 10.8.0.10-10.8.0.20\nlimits:\n  session_rate: 10mb\n", "line 3"},
		{"pool: 10.8.0.10-10.8.0.20\nusers:\n  alice: {rate: 0}\n", "line 3"},
		{"pool: 10.8.0.10-10.8.0.20\nusers:\n  alice: {}\n", "users.alice.rate: required"},
		{"pool: 10.8.0.10-10.8.0.20\nusers:\n  alice: {rat: 1mbit}\n", "line 3"},
	} {
		if err := os.WriteFile(p, []byte(c.y), 0o600); err != nil {
			t.Fatal(err)
		}
		fc, err := LoadFileConfig(p)
		if err == nil {
			_, err = fc.Config()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want %q", c.y, err, c.want)
		}
	}
}

// The shaper paces each direction to the rate on its own, holds a short
// queue and counts what it drops beyond.
func TestSessionShaper(t *testing.T) {
	var p sessionShaper
	end := make(chan struct{})
	defer close(end)
	var mu sync.Mutex
	got := [2]int{}
	first, last := [2]time.Time{}, [2]time.Time{}
	mk := func(d int) func([]byte) {
		return func(b []byte) {
			mu.Lock()
			defer mu.Unlock()
			if got[d] == 0 {
				first[d] = time.Now()
			}
			got[d] += len(b)
			last[d] = time.Now()
		}
	}
	const rate = 8_000_000 // 1 MB/s: 16 queued packets, 20 kB burst
	p.start(rate, end, [2]func([]byte){mk(0), mk(1)})
	// 300 packets of 1000 bytes at once each way: the queue's and the
	// burst's worth pass, the rest are dropped...
	for range 300 {
		for d := range 2 {
			if !p.shape(d, make([]byte, 1000)) {
				t.Fatal("limited session not shaped")
			}
		}
	}
	// ...paced: wait (up to 5 s, on a loaded machine) until every packet
	// was sent or dropped.
	for range 500 {
		mu.Lock()
		done := got[0]/1000+int(p.dropped[0].Load()) == 300 && got[1]/1000+int(p.dropped[1].Load()) == 300
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for d := range 2 {
		// Paced: the packets after the burst left at the rate, not at once.
		if el, min := last[d].Sub(first[d]), time.Duration(float64(got[d]-int(sessionBurst(rate)))/1e6*float64(time.Second)); el < min*9/10 {
			t.Errorf("dir %d: %d bytes left within %v: not paced (want at least %v)", d, got[d], el, min)
		}
	}
	// The pacer may take packets out while they are queued: the burst's
	// worth, and at the rate while the loop runs (a few ms).
	q, b := sessionQueue(rate), int(sessionBurst(rate))/1000
	for d := range 2 {
		n := got[d] / 1000
		if n < q || n > q+b+10 || int(p.dropped[d].Load())+n != 300 {
			t.Errorf("dir %d: %d packets sent, %d dropped; want %d-%d through, the rest dropped", d, n, p.dropped[d].Load(), q, q+b+10)
		}
	}
	var none sessionShaper
	none.start(0, end, [2]func([]byte){})
	if none.shape(0, make([]byte, 100)) {
		t.Error("unlimited session shaped")
	}
}
