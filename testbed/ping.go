package testbed

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"pptpgw/internal/pkt"
)

// PingResult is one bounded ICMP echo run.
type PingResult struct {
	Sent int
	RTTs []time.Duration // of the answered echoes, in order of sending
}

// Lost is how many echoes went unanswered.
func (r PingResult) Lost() int { return r.Sent - len(r.RTTs) }

// Percentile returns the p-th percentile (0-100) of the RTTs, counting a
// lost echo as slower than any answer (0 if nothing was sent).
func (r PingResult) Percentile(p float64) time.Duration {
	if r.Sent == 0 {
		return 0
	}
	s := slices.Clone(r.RTTs)
	slices.Sort(s)
	i := int(float64(r.Sent)*p/100+0.999999) - 1
	i = max(i, 0)
	if i >= len(s) {
		return time.Hour // a lost echo
	}
	return s[i]
}

// Ping sends count ICMP echo requests from namespace n to dst, one every
// interval, and waits up to a second after the last for the answers. It
// uses a raw socket (no ping binary needed).
func Ping(ctx context.Context, n *NS, dst netip.Addr, interval time.Duration, count int) (PingResult, error) {
	var fd int
	if err := n.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	}); err != nil {
		return PingResult{}, fmt.Errorf("ping socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return PingResult{}, err
	}
	id := uint16(time.Now().UnixNano()>>10) | 1
	sent := make([]time.Time, count)
	got := make([]time.Duration, count)
	var mu sync.Mutex
	done := make(chan struct{})
	stop := make(chan struct{})
	go func() { // receiver
		defer close(done)
		buf := make([]byte, 1500)
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, _, err := unix.Recvfrom(fd, buf, 0)
			now := time.Now()
			if err != nil || m < 28 {
				continue
			}
			ihl := int(buf[0]&0xf) * 4
			if m < ihl+8 {
				continue
			}
			icmp := buf[ihl:m]
			if icmp[0] != 0 || binary.BigEndian.Uint16(icmp[4:]) != id {
				continue
			}
			seq := int(binary.BigEndian.Uint16(icmp[6:]))
			mu.Lock()
			if seq < count && !sent[seq].IsZero() && got[seq] == 0 {
				got[seq] = max(now.Sub(sent[seq]), time.Nanosecond)
			}
			mu.Unlock()
		}
	}()
	to := &unix.SockaddrInet4{Addr: dst.As4()}
	msg := make([]byte, 64)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	r := PingResult{}
	for seq := 0; seq < count; seq++ {
		clear(msg)
		msg[0] = 8 // echo request
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], uint16(seq))
		binary.BigEndian.PutUint16(msg[2:], pkt.Checksum(msg))
		mu.Lock()
		sent[seq] = time.Now()
		mu.Unlock()
		if err := unix.Sendto(fd, msg, 0, to); err == nil {
			r.Sent++
		}
		select {
		case <-ctx.Done():
			count = seq + 1
		case <-tick.C:
		}
		if ctx.Err() != nil {
			break
		}
	}
	time.Sleep(time.Second)
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	for _, d := range got[:count] {
		if d > 0 {
			r.RTTs = append(r.RTTs, d)
		}
	}
	return r, nil
}
