package gre

import (
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"pptpgw/internal/pkt"
)

// rawConn is a raw IPPROTO_GRE (47) socket. The kernel strips the IPv4 header on
// receive and builds it on send. Every raw GRE socket of the namespace sees every GRE
// packet addressed to the host, so the Mux drops those for calls it does not know.
//
// It is also a BatchReader: ReadBatch receives up to a batch of packets with one
// recvmmsg(2), which is how Mux.Serve reads it.
type rawConn struct {
	c  *net.IPConn
	rc syscall.RawConn

	// ReadBatch state, used by one reader at a time (Mux.Serve).
	msgs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	got   int
	errno syscall.Errno
	recv  func(fd uintptr) bool // bound once: no closure allocation per batch

	// WritePacket state: sendto(2) with a reused sockaddr, no allocation per packet.
	wmu  sync.Mutex
	wb   []byte
	wsa  unix.RawSockaddrInet4
	werr syscall.Errno
	send func(fd uintptr) bool
}

// mmsghdr is struct mmsghdr of recvmmsg(2) (x/sys/unix has no wrapper).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// ListenRaw opens a raw GRE socket bound to laddr (the zero Addr = any). Needs
// CAP_NET_RAW.
func ListenRaw(laddr netip.Addr) (PacketConn, error) {
	var a *net.IPAddr
	if laddr.IsValid() {
		a = &net.IPAddr{IP: laddr.AsSlice()}
	}
	c, err := net.ListenIP("ip4:gre", a)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	r := &rawConn{c: c, rc: rc}
	r.recv = r.recvmmsg
	r.send = r.sendto
	r.wsa.Family = unix.AF_INET
	return r, nil
}

func (r *rawConn) ReadPacket(b []byte) (int, netip.Addr, error) {
	n, addr, err := r.c.ReadFromIP(b)
	if err != nil {
		return 0, netip.Addr{}, err
	}
	ip, _ := netip.AddrFromSlice(addr.IP)
	return n, ip.Unmap(), nil
}

// ReadBatch implements BatchReader with recvmmsg(2). The raw socket delivers the IPv4
// header too: it is validated and cut off here (pkts[i] is the GRE part of bufs[i]).
func (r *rawConn) ReadBatch(bufs, pkts [][]byte, srcs []netip.Addr) (int, error) {
	n := min(len(bufs), len(pkts), len(srcs))
	if n == 0 {
		return 0, nil
	}
	if len(r.msgs) < n {
		r.msgs = make([]mmsghdr, n)
		r.iovs = make([]unix.Iovec, n)
		r.names = make([]unix.RawSockaddrInet4, n)
	}
	for i := range n {
		r.iovs[i].Base = unsafe.SliceData(bufs[i])
		r.iovs[i].SetLen(len(bufs[i]))
		h := &r.msgs[i].hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&r.names[i])), Namelen: unix.SizeofSockaddrInet4,
			Iov: &r.iovs[i], Iovlen: 1}
		r.msgs[i].len = 0
	}
	r.got = n
	if err := r.rc.Read(r.recv); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, r.errno
	}
	got := r.got
	k := 0
	for i := range got {
		b := bufs[i][:r.msgs[i].len]
		ip := pkt.IPv4(b)
		if !ip.IsValid(len(b)) {
			continue
		}
		pkts[k] = ip.Payload()
		srcs[k] = netip.AddrFrom4(r.names[i].Addr)
		k++
	}
	return k, nil
}

// recvmmsg runs inside RawConn.Read: false = would block, wait for readability.
func (r *rawConn) recvmmsg(fd uintptr) bool {
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(r.got), unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	r.errno = 0
	if e != 0 {
		r.errno, r.got = e, 0
		return true
	}
	r.got = int(n)
	return true
}

func (r *rawConn) WritePacket(b []byte, dst netip.Addr) error {
	if !dst.Is4() {
		_, err := r.c.WriteToIP(b, &net.IPAddr{IP: dst.AsSlice()})
		return err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.wb, r.wsa.Addr = b, dst.As4()
	err := r.rc.Write(r.send)
	r.wb = nil
	if err != nil {
		return err
	}
	if r.werr != 0 {
		return r.werr
	}
	return nil
}

// sendto runs inside RawConn.Write: false = would block, wait for writability.
func (r *rawConn) sendto(fd uintptr) bool {
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.wb))), uintptr(len(r.wb)),
		0, uintptr(unsafe.Pointer(&r.wsa)), unix.SizeofSockaddrInet4)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	r.werr = e
	return true
}

func (r *rawConn) Close() error { return r.c.Close() }
