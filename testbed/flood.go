package testbed

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"pptpgw/internal/pkt"
	"pptpgw/pptp/wire"
)

// This file holds the adversary's side of the hardening tests: floods of
// TCP segments to port 1723 written on a raw socket (SYNs from random
// source ports, garbage segments), and a client that opens many control
// connections with many Outgoing-Call-Requests each.

// TCPFlood describes a flood of TCP segments to port 1723 sent by
// SendTCPFlood.
type TCPFlood struct {
	Count int
	// Sources are the source addresses, taken in turn (any but the
	// namespace's own are spoofed); empty: the namespace's address.
	Sources []netip.Addr
	// Dests are the destination addresses, taken in turn; empty: ServerIP.
	Dests []netip.Addr
	// Garbage sends a mix of segments a lenient gateway may take for
	// control connections instead of plain SYNs: SYNs carrying an
	// Outgoing-Call-Request, mid-stream segments with one, random bytes
	// with random flags.
	Garbage bool
	// Rate bounds the packets per second (default 100000), so the flood
	// measures the gateway, not the kernel queue's overflow.
	Rate int
	Seed uint64
}

// SendTCPFlood writes f.Count segments to port 1723 from namespace n on a
// raw socket (IP_HDRINCL: spoofed sources and random source ports, valid
// IP and TCP checksums) and returns how many were sent.
func (n *NS) SendTCPFlood(ctx context.Context, f TCPFlood) (int, error) {
	if len(f.Sources) == 0 {
		f.Sources = []netip.Addr{n.IP}
	}
	if len(f.Dests) == 0 {
		f.Dests = []netip.Addr{ServerIP}
	}
	if f.Rate <= 0 {
		f.Rate = 100000
	}
	var fd int
	err := n.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("raw socket in %s: %w", n.Name, err)
	}
	defer unix.Close(fd)
	rnd := rand.New(rand.NewPCG(f.Seed, 0x6e6f6973))
	buf := make([]byte, 0, 512)
	start := time.Now()
	for i := range f.Count {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return i, err
			}
			if ahead := time.Duration(i)*time.Second/time.Duration(f.Rate) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		src, dst := f.Sources[i%len(f.Sources)].As4(), f.Dests[i%len(f.Dests)].As4()
		buf = floodSegment(buf[:0], rnd, src, dst, f.Garbage)
		if err := unix.Sendto(fd, buf, 0, &unix.SockaddrInet4{Addr: dst}); err != nil {
			return i, fmt.Errorf("sendto %v: %w", netip.AddrFrom4(dst), err)
		}
	}
	return f.Count, nil
}

// floodSegment appends one IPv4+TCP segment from src (random port) to
// dst:1723: a SYN, or with garbage one of the garbage kinds.
func floodSegment(b []byte, rnd *rand.Rand, src, dst [4]byte, garbage bool) []byte {
	flags := uint8(pkt.TCPFlagSyn)
	var payload []byte
	if garbage {
		ocrq := (&wire.OCRQ{CallID: uint16(rnd.Uint32()), CallSerial: uint16(rnd.Uint32()), RecvWindow: 16}).Append(nil)
		switch rnd.IntN(4) {
		case 0: // a SYN carrying a request: a stream the gateway parses
			payload = ocrq
		case 1: // a request in the middle of a stream it never saw open
			flags, payload = pkt.TCPFlagAck|pkt.TCPFlagPsh, ocrq
		case 2: // random bytes, random flags
			flags = uint8(rnd.Uint32())
			payload = make([]byte, 1+rnd.IntN(200))
			for i := range payload {
				payload[i] = byte(rnd.Uint32())
			}
		default: // a header with the magic cookie and a random type
			payload = ocrq[:wire.HeaderLen]
			binary.BigEndian.PutUint16(payload[wire.CtrlTypeOffset:], uint16(rnd.IntN(20)))
		}
	}
	total := pkt.IPv4MinimumSize + pkt.TCPMinimumSize + len(payload)
	b = append(b, make([]byte, total)...)
	ip := pkt.IPv4(b)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[pkt.IPv4TotalLenOffset:], uint16(total))
	ip[pkt.IPv4TTLOffset] = 64
	ip[pkt.IPv4ProtocolOffset] = uint8(pkt.IPv4ProtocolTCP)
	copy(ip[pkt.IPv4SrcAddrOffset:], src[:])
	copy(ip[pkt.IPv4DstAddrOffset:], dst[:])
	ip.SetChecksum(ip.CalculateChecksum())
	tcp := pkt.TCP(ip[pkt.IPv4MinimumSize:])
	binary.BigEndian.PutUint16(tcp[pkt.TCPSrcPortOffset:], uint16(1024+rnd.IntN(64512)))
	binary.BigEndian.PutUint16(tcp[pkt.TCPDstPortOffset:], wire.ControlPort)
	binary.BigEndian.PutUint32(tcp[pkt.TCPSeqNumOffset:], rnd.Uint32())
	tcp[pkt.TCPDataOffsetOffset] = 5 << 4
	tcp[pkt.TCPFlagsOffset] = flags
	binary.BigEndian.PutUint16(tcp[pkt.TCPWindowOffset:], 64240)
	copy(tcp[pkt.TCPMinimumSize:], payload)
	tcp.SetChecksum(tcp.CalculateChecksum(src, dst))
	return b
}

// CallFloodResult is the outcome of RunCallFlood.
type CallFloodResult struct {
	Conns    int // control connections set up (SCCRP received)
	Requests int // Outgoing-Call-Requests written
	Replies  int // Outgoing-Call-Replies read
	Error    string
}

// RunCallFlood opens conns control connections from namespace n to
// server:1723 (a PAC must be running), writes perConn Outgoing-Call-Requests
// on each at once (call IDs 1..perConn), reads the replies for up to wait,
// and closes every connection (FIN: the gateway drops their calls).
func RunCallFlood(ctx context.Context, n *NS, server netip.Addr, conns, perConn int, wait time.Duration) (res CallFloodResult) {
	addr := netip.AddrPortFrom(server, wire.ControlPort).String()
	var cs []net.Conn
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	sccrq := (&wire.SCCRQ{ProtocolVersion: wire.ProtocolVersion, FramingCaps: wire.FramingAsync | wire.FramingSync,
		BearerCaps: wire.BearerAnalog | wire.BearerDigital, Hostname: "call-flood", Vendor: "pptpgw testbed"}).Append(nil)
	buf := make([]byte, wire.MaxMsgLen)
	for range conns {
		c, err := n.DialContext(ctx, "tcp4", addr)
		if err != nil {
			res.Error = fmt.Sprintf("connect: %v", err)
			return res
		}
		cs = append(cs, c)
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(sccrq); err != nil {
			res.Error = fmt.Sprintf("SCCRQ: %v", err)
			return res
		}
		if _, err := wire.ReadMessage(c, buf); err != nil {
			res.Error = fmt.Sprintf("SCCRP: %v", err)
			return res
		}
		res.Conns++
		var reqs []byte
		for id := range perConn {
			reqs = (&wire.OCRQ{CallID: uint16(id + 1), CallSerial: uint16(id), MinBPS: 300, MaxBPS: 100000000,
				BearerType: wire.BearerAnalog, FramingType: wire.FramingAsync, RecvWindow: 16}).Append(reqs)
		}
		if _, err := c.Write(reqs); err != nil {
			res.Error = fmt.Sprintf("OCRQs: %v", err)
			return res
		}
		res.Requests += perConn
	}
	deadline := time.Now().Add(wait)
	for _, c := range cs {
		_ = c.SetReadDeadline(deadline)
		for got := 0; got < perConn; {
			m, err := wire.ReadMessage(c, buf)
			if err != nil {
				break
			}
			if _, ok := m.(*wire.OCRP); ok {
				got++
				res.Replies++
			}
		}
	}
	return res
}

// RSS returns the resident set size of process pid in bytes
// (/proc/PID/status, VmRSS).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}
