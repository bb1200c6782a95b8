package testbed

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"pptpgw/internal/pkt"
	"pptpgw/pptp/wire"
	"pptpgw/testbed/fakeppp"
)

// GRECapture counts the GRE packets arriving on a namespace's main
// interface, read with AF_PACKET: every frame the link brings in, whether or
// not the host's IP layer would take it (its own outgoing frames are left
// out). Packets whose payload is a fakeppp frame tagged with the capture's
// tag count as Tagged, all other GRE as Other; Sources counts all of them
// by source address.
type GRECapture struct {
	Tagged, Other atomic.Int64

	f    *os.File
	tag  string
	done chan struct{}

	mu      sync.Mutex
	sources map[netip.Addr]int64
}

// CaptureGRE starts a GRECapture on n.If for tag. Close stops it.
func (n *NS) CaptureGRE(tag string) (*GRECapture, error) {
	l, err := n.nl.LinkByName(n.If)
	if err != nil {
		return nil, err
	}
	proto := int(htons(unix.ETH_P_IP))
	var fd int
	err = n.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket in %s: %w", n.Name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: l.Attrs().Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind AF_PACKET to %s in %s: %w", n.If, n.Name, err)
	}
	c := &GRECapture{f: os.NewFile(uintptr(fd), "packet:"+n.If), tag: tag, done: make(chan struct{}),
		sources: map[netip.Addr]int64{}}
	rc, err := c.f.SyscallConn()
	if err != nil {
		c.f.Close()
		return nil, err
	}
	go c.loop(rc.Read)
	return c, nil
}

// loop counts packets until the socket is closed; read is the socket's
// RawConn.Read, which waits in the runtime's poller.
func (c *GRECapture) loop(read func(func(fd uintptr) bool) error) {
	defer close(c.done)
	buf := make([]byte, 65536)
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		if err := read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		}); err != nil {
			return
		}
		if rerr != nil {
			if rerr == unix.EINTR {
				continue
			}
			return // the socket is closed or broken: nothing more to count
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		var p pkt.Parsed
		if p.Parse(buf[:n]); p.Err != "" || p.Proto != pkt.IPv4ProtocolGRE || p.Fragment {
			continue
		}
		c.mu.Lock()
		c.sources[netip.AddrFrom4(p.Src)]++
		c.mu.Unlock()
		_, payload, err := wire.ParseGRE(buf[p.PayloadOff:p.TotalLen])
		if tag, _, ok := fakeppp.ParseFrame(payload); err == nil && ok && tag == c.tag {
			c.Tagged.Add(1)
		} else {
			c.Other.Add(1)
		}
	}
}

// Sources returns how many GRE packets arrived from each source address
// so far.
func (c *GRECapture) Sources() map[netip.Addr]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.sources)
}

// Close stops the capture; the counters keep their values.
func (c *GRECapture) Close() error {
	err := c.f.Close()
	<-c.done
	return err
}

// htons converts a 16-bit value to network byte order, as AF_PACKET's
// protocol fields want it (stored in host order).
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
