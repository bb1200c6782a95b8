package nfq

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"pptpgw/internal/pkt"
)

func TestWaitModeString(t *testing.T) {
	for w, want := range map[WaitMode]string{WaitPoller: "poller", WaitSyscall: "syscall", 7: "WaitMode(7)"} {
		if got := w.String(); got != want {
			t.Errorf("%d: %q, want %q", uint8(w), got, want)
		}
	}
	var c Config
	if c.Wait != WaitPoller {
		t.Error("the zero Config does not wait in the poller")
	}
}

// runGoroutineState returns the scheduler state of the goroutine running
// Queue.Run ("IO wait", "syscall", "running", ...), "" if there is none.
func runGoroutineState() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "nfq.(*Queue).Run(") {
			continue
		}
		head, _, _ := strings.Cut(g, "\n")
		_, st, _ := strings.Cut(head, "[")
		st, _, _ = strings.Cut(st, "]")
		st, _, _ = strings.Cut(st, ",") // "syscall, 2 minutes"
		return st
	}
	return ""
}

// TestWaitModesNetns runs a queue in each wait mode: packets are handled
// and answered, an idle reader waits where the mode says (a parked
// goroutine in the poller, "IO wait", or a goroutine in a system call), and
// Close stops Run.
func TestWaitModesNetns(t *testing.T) {
	for i, mode := range []WaitMode{WaitPoller, WaitSyscall} {
		t.Run(mode.String(), func(t *testing.T) {
			ns := newTestNS(t, uint16(31+i))
			tx, rx := ns.greSockets(t)
			c, err := Open(Config{Queue: ns.q, NetNS: ns.fd, Wait: mode})
			if err != nil {
				t.Fatal(err)
			}
			flags, err := unix.FcntlInt(uintptr(c.fd), unix.F_GETFL, 0)
			if err != nil {
				t.Fatal(err)
			}
			if nonblock := flags&unix.O_NONBLOCK != 0; nonblock != (mode == WaitPoller) {
				t.Errorf("socket non-blocking: %v, want %v", nonblock, mode == WaitPoller)
			}
			var handled atomic.Int64
			done := make(chan error, 1)
			go func() {
				done <- c.Run(context.Background(), func(p *Packet) pkt.Verdict {
					handled.Add(1)
					return pkt.Accept
				})
			}()
			const n = 50
			for k := range n {
				if err := unix.Sendto(tx, grePacket(uint16(0x100+k)), 0, loopback); err != nil {
					t.Fatal(err)
				}
				if !recvKey(rx, uint16(0x100+k), 3*time.Second) {
					t.Fatalf("packet %d not delivered", k)
				}
			}
			if got := handled.Load(); got != n {
				t.Errorf("handled %d packets, want %d", got, n)
			}
			want := map[WaitMode]string{WaitPoller: "IO wait", WaitSyscall: "syscall"}[mode]
			var st string
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if st = runGoroutineState(); st == want {
					break
				}
			}
			if st != want {
				t.Errorf("idle reader's goroutine is %q, want %q", st, want)
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("Run did not return after Close")
			}
			if st := c.Stats(); st.Packets != n || st.Verdicts != n || st.VerdictErrors != 0 {
				t.Errorf("stats %+v, want %d packets and verdicts, no errors", st, n)
			}
		})
	}
}

// TestPollerNoAllocsNetns: a packet's whole way through the reader in poller
// mode (wait in the poller, read, handle, send the verdict) allocates
// nothing.
func TestPollerNoAllocsNetns(t *testing.T) {
	ns := newTestNS(t, 33)
	tx, rx := ns.greSockets(t)
	if err := unix.Connect(tx, loopback); err != nil {
		t.Fatal(err)
	}
	c, err := Open(Config{Queue: ns.q, NetNS: ns.fd})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := func(p *Packet) pkt.Verdict {
		p.Payload[27] ^= 1
		p.Modified = true
		return pkt.Accept
	}
	b := grePacket(0x4242)
	one := func() {
		if _, err := unix.Write(tx, b); err != nil {
			t.Fatal(err)
		}
		n, errno := c.receive()
		if errno != 0 {
			t.Fatalf("receive: %v", errno)
		}
		for i := 0; i < n; i++ {
			c.handleDatagram(c.bufs[i][:c.msgs[i].Len], h)
		}
		c.flush()
	}
	one() // warm up
	if allocs := testing.AllocsPerRun(200, one); allocs != 0 {
		t.Errorf("%v allocations per packet, want 0", allocs)
	}
	if st := c.Stats(); st.Packets < 201 || st.VerdictErrors != 0 {
		t.Errorf("stats %+v: want every packet handled, no verdict errors", st)
	}
	if !recvKey(rx, 0x4243, 3*time.Second) {
		t.Error("rewritten packets not delivered")
	}
}
